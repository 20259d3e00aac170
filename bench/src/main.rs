//! keyledger-bench (work in progress).

fn main() {}
