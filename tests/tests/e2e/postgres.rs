//! The PostgreSQL provider against a real server. (Being written.)
