//! The seed of CEXL, Mixer's configuration expression language: enough to evaluate rule
//! `match` clauses made of equality tests joined by boolean operators.
//!
//! Supported: attribute names (`destination.service.host`), map indexing with a string key
//! (`source.labels["app"]`), string (`"v3"`, `` `raw` ``), integer and boolean literals, `==`,
//! `!=`, `!`, `&&`, `||`, `|` (first operand that is present), parentheses, and the functions
//! `ip`, `match`, `toLower`, `emptyStringMap`, `conditionalString`, `conditional`.
//!
//! - [`lexer`]: text → tokens.
//! - [`ast`]: the expression tree.
//! - [`parser`]: tokens → tree, with precedence `||` < `&&` < `== !=` < `!` < `|` < primary.
//! - [`eval`]: evaluation against an attribute bag, recording every attribute it read.

pub mod ast;
pub mod eval;
pub mod lexer;
pub mod parser;

pub use ast::{Expr, Literal};
pub use eval::{
    Attributes, EvalError, Evaluation, Read, Reference, eval_bool_reads, eval_value_reads,
    evaluate, evaluate_value,
};
pub use parser::{ParseError, parse};
