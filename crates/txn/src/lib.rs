//! Transactions (issue 4): under construction.
