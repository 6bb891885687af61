//! The local agent and credential injection into real shells and tools. (Being written.)
