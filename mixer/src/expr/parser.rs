//! Recursive-descent parser: `||` < `&&` < `== !=` < `!` < `|` < primary.

use super::ast::{Expr, Literal};
use super::lexer::{LexError, Token, tokenize};

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Lex(#[from] LexError),
    #[error("at offset {offset}: {message}")]
    Syntax { offset: usize, message: String },
    #[error("unexpected end of expression: {0}")]
    End(String),
}

/// Parses `text`. An empty (or blank) expression means `true`, as in Mixer rules.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Ok(Expr::Literal(Literal::Bool(true)));
    }
    let mut p = Parser { tokens, pos: 0 };
    let e = p.or()?;
    if let Some((offset, t)) = p.tokens.get(p.pos) {
        return Err(ParseError::Syntax {
            offset: *offset,
            message: format!("unexpected {t:?} after a complete expression"),
        });
    }
    Ok(e)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn next(&mut self, wanted: &str) -> Result<(usize, Token), ParseError> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| ParseError::End(format!("expected {wanted}")))?;
        self.pos += 1;
        Ok(t)
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.and()?;
        while self.eat(&Token::OrOr) {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.equality()?;
        while self.eat(&Token::AndAnd) {
            let right = self.equality()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn equality(&mut self) -> Result<Expr, ParseError> {
        let left = self.unary()?;
        if self.eat(&Token::EqEq) {
            let right = self.unary()?;
            return Ok(Expr::Eq(Box::new(left), Box::new(right)));
        }
        if self.eat(&Token::NotEq) {
            let right = self.unary()?;
            return Ok(Expr::Ne(Box::new(left), Box::new(right)));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat(&Token::Bang) {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.default()
    }

    fn default(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.primary()?;
        while self.eat(&Token::Pipe) {
            let right = self.primary()?;
            left = Expr::Default(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let (offset, t) = self.next("an attribute, a literal or '('")?;
        match t {
            Token::String(s) => Ok(Expr::Literal(Literal::String(s))),
            Token::Int(i) => Ok(Expr::Literal(Literal::Int(i))),
            Token::True => Ok(Expr::Literal(Literal::Bool(true))),
            Token::False => Ok(Expr::Literal(Literal::Bool(false))),
            Token::LParen => {
                let e = self.or()?;
                match self.next("')'")? {
                    (_, Token::RParen) => Ok(e),
                    (offset, t) => Err(ParseError::Syntax {
                        offset,
                        message: format!("expected ')', found {t:?}"),
                    }),
                }
            }
            Token::Ident(name) => {
                if self.eat(&Token::LParen) {
                    let mut args = Vec::new();
                    if !self.eat(&Token::RParen) {
                        loop {
                            args.push(self.or()?);
                            match self.next("',' or ')'")? {
                                (_, Token::Comma) => continue,
                                (_, Token::RParen) => break,
                                (offset, t) => {
                                    return Err(ParseError::Syntax {
                                        offset,
                                        message: format!("expected ',' or ')', found {t:?}"),
                                    });
                                }
                            }
                        }
                    }
                    return Ok(Expr::Call { func: name, args });
                }
                if !self.eat(&Token::LBracket) {
                    return Ok(Expr::Attr(name));
                }
                let key = match self.next("a string key")? {
                    (_, Token::String(k)) => k,
                    (offset, t) => {
                        return Err(ParseError::Syntax {
                            offset,
                            message: format!("map key must be a string literal, found {t:?}"),
                        });
                    }
                };
                match self.next("']'")? {
                    (_, Token::RBracket) => Ok(Expr::Index { attr: name, key }),
                    (offset, t) => Err(ParseError::Syntax {
                        offset,
                        message: format!("expected ']', found {t:?}"),
                    }),
                }
            }
            other => Err(ParseError::Syntax {
                offset,
                message: format!("expected an attribute, a literal or '(', found {other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse(s).unwrap().to_string()
    }

    #[test]
    fn empty_is_true() {
        assert_eq!(parse("").unwrap(), Expr::Literal(Literal::Bool(true)));
        assert_eq!(parse("  ").unwrap(), Expr::Literal(Literal::Bool(true)));
        assert_eq!(parse("true").unwrap(), Expr::Literal(Literal::Bool(true)));
    }

    #[test]
    fn precedence() {
        assert_eq!(
            p(r#"destination.labels["app"] == "ratings" && source.labels["version"] == "v3""#),
            r#"((destination.labels["app"] == "ratings") && (source.labels["version"] == "v3"))"#
        );
        assert_eq!(p("a == 1 || b == 2 && c"), "((a == 1) || ((b == 2) && c))");
        assert_eq!(p("(a || b) && c"), "((a || b) && c)");
        assert_eq!(p(r#"!a.b == "x""#), r#"(!a.b == "x")"#);
        assert_eq!(p(r#"a | b | "d" != "x""#), r#"(((a | b) | "d") != "x")"#);
        assert_eq!(
            p(r#"source.ip | ip("0.0.0.0")"#),
            r#"(source.ip | ip("0.0.0.0"))"#
        );
        assert_eq!(p(r#"match(a, "x*") && f()"#), r#"(match(a, "x*") && f())"#);
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(parse("a =="), Err(ParseError::End(_))));
        assert!(matches!(
            parse("a b"),
            Err(ParseError::Syntax { offset: 2, .. })
        ));
        assert!(matches!(parse("(a"), Err(ParseError::End(_))));
        assert!(matches!(
            parse("m[1]"),
            Err(ParseError::Syntax { offset: 2, .. })
        ));
        assert!(matches!(parse("a == == b"), Err(ParseError::Syntax { .. })));
        assert!(matches!(parse("a @ b"), Err(ParseError::Lex(_))));
        assert!(matches!(parse("f(a b)"), Err(ParseError::Syntax { .. })));
        assert!(matches!(parse("f(a,"), Err(ParseError::End(_))));
    }
}
