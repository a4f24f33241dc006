//! userns
