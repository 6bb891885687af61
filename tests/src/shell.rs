//! Real shells driven through tmux, for prompt-hook tests. (Being written.)
