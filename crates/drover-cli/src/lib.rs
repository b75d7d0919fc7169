//! drover-cli
