-- TEST / DEMO ONLY. The stack's database is `payhook` (POSTGRES_DB); `test` is the
-- database the test suite uses when scripts/services starts this PostgreSQL
-- (`docker compose up -d postgres`) on a machine without a local one.
CREATE DATABASE test;
