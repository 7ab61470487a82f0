//! Unit tests of the configuration file.
