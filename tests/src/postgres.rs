//! A throwaway PostgreSQL cluster for tests. (Being written.)
