// The raftkv package entry: the client library. (The node itself runs as `kvnode`; see bin/.)
export * from './client/index.js';
