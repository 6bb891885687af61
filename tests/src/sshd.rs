//! A throwaway sshd on loopback for tests. (Being written.)
