// Seeds 1001..2000 of the fault simulator. The 2,000 seeds of `npm test` (3- and 5-node clusters)
// are split over two files so vitest runs them on both cores.

import { defineSeedSuite } from './seed-range.js';

defineSeedSuite(1001, 1000);
