//! A small HTTP server on 127.0.0.1 with a request log (added by the http issue).
