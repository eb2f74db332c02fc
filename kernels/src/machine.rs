//! This machine's limits: identity, measured FMA peak and memory bandwidth.
