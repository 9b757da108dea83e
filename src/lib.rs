//! Hallmark relying-party library.
