//! The exec provider running real hook commands. (Being written.)
