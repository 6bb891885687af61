//! The local agent: holds live credentials in memory and serves them to shells
//! and tools over a Unix socket. (Being written: issue 4.)
