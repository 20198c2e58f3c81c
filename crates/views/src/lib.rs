//! Derived views (issue 5): under construction.
