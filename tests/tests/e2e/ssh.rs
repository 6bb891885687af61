//! The SSH provider against a real sshd. (Being written.)
