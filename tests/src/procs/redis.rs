//! Private redis-server instances and clusters for one test (to be written)
