//! A private PostgreSQL server for one test (to be written)
