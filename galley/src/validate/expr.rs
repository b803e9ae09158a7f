//! A syntax check of Mixer expressions (rule `match`, instance `params`): Mixer parses them with
//! Go's expression grammar, so this accepts that grammar (operands, selectors, indexes, calls,
//! unary and binary operators, parentheses) and reports the first position where the text stops
//! being an expression. Types and attribute names are Mixer's business, not checked here.

/// The deepest nesting (parentheses, indexes, calls, unary operators) accepted.
const MAX_NESTING: usize = 64;

/// Where and why an expression does not parse; `position` is the 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {message}")]
pub(crate) struct ExprError {
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident,
    Literal,
    Op(&'static str),
    Open(char),
    Close(char),
    Dot,
    Comma,
}

/// Binary operators of Go's grammar, longest first.
const BINARY: [&str; 18] = [
    "||", "&&", "==", "!=", "<=", ">=", "<<", ">>", "&^", "<", ">", "|", "+", "-", "*", "/", "%",
    "^",
];

/// Checks that `text` is one expression. A blank text is accepted (Mixer reads it as unset).
pub(crate) fn check_expression(text: &str) -> Result<(), ExprError> {
    let toks = lex(text)?;
    if toks.is_empty() {
        return Ok(());
    }
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        end: text.chars().count() + 1,
    };
    p.expr(0)?;
    match p.toks.get(p.pos) {
        None => Ok(()),
        Some((at, t)) => Err(ExprError {
            position: *at,
            message: format!("unexpected {} after a complete expression", describe(t)),
        }),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident => "name".into(),
        Tok::Literal => "literal".into(),
        Tok::Op(o) => format!("operator {o:?}"),
        Tok::Open(c) | Tok::Close(c) => format!("{c:?}"),
        Tok::Dot => "'.'".into(),
        Tok::Comma => "','".into(),
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, message: String| ExprError {
        position: i + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((at, Tok::Ident));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let hex = c == '0' && matches!(chars.get(i + 1), Some('x' | 'X'));
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                // An exponent sign belongs to the number.
                if !hex
                    && matches!(chars[i], 'e' | 'E')
                    && matches!(chars.get(i + 1), Some('+' | '-'))
                {
                    i += 1;
                }
                i += 1;
            }
            let lit: String = chars[at - 1..i].iter().collect();
            if !number_ok(&lit) {
                return Err(err(at - 1, format!("malformed number {lit:?}")));
            }
            out.push((at, Tok::Literal));
        } else if matches!(c, '"' | '\'' | '`') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(at - 1, "unterminated string".into())),
                    Some('\\') if c != '`' => i += 2,
                    Some('\n') if c != '`' => {
                        return Err(err(at - 1, "unterminated string".into()));
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push((at, Tok::Literal));
        } else if matches!(c, '(' | '[') {
            out.push((at, Tok::Open(c)));
            i += 1;
        } else if matches!(c, ')' | ']') {
            out.push((at, Tok::Close(c)));
            i += 1;
        } else if c == '.' {
            out.push((at, Tok::Dot));
            i += 1;
        } else if c == ',' {
            out.push((at, Tok::Comma));
            i += 1;
        } else if c == '!' && chars.get(i + 1) != Some(&'=') {
            out.push((at, Tok::Op("!")));
            i += 1;
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = BINARY.iter().find(|op| rest.starts_with(**op)) else {
                return Err(err(i, format!("unexpected character {c:?}")));
            };
            out.push((at, Tok::Op(op)));
            i += op.len();
        }
    }
    Ok(out)
}

fn number_ok(lit: &str) -> bool {
    let lit = lit.replace('_', "");
    lit.parse::<f64>().is_ok()
        || lit.parse::<i64>().is_ok()
        || lit
            .strip_prefix("0x")
            .or_else(|| lit.strip_prefix("0X"))
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
}

struct Parser<'a> {
    toks: &'a [(usize, Tok)],
    pos: usize,
    /// The position just past the text (where "unexpected end" is reported).
    end: usize,
}

impl Parser<'_> {
    fn here(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn fail<T>(&self, wanted: &str) -> Result<T, ExprError> {
        let found = self
            .toks
            .get(self.pos)
            .map_or_else(|| "end of expression".to_string(), |(_, t)| describe(t));
        Err(ExprError {
            position: self.here(),
            message: format!("expected {wanted}, found {found}"),
        })
    }

    fn depth(&self, depth: usize) -> Result<usize, ExprError> {
        if depth >= MAX_NESTING {
            return Err(ExprError {
                position: self.here(),
                message: format!("nested deeper than {MAX_NESTING}"),
            });
        }
        Ok(depth + 1)
    }

    /// operand (binary-operator operand)*
    fn expr(&mut self, depth: usize) -> Result<(), ExprError> {
        self.unary(depth)?;
        while let Some((_, Tok::Op(op))) = self.toks.get(self.pos) {
            if *op == "!" {
                return self.fail("an operator");
            }
            self.pos += 1;
            self.unary(depth)?;
        }
        Ok(())
    }

    fn unary(&mut self, depth: usize) -> Result<(), ExprError> {
        let depth = self.depth(depth)?;
        if let Some((_, Tok::Op("!" | "-" | "+" | "^"))) = self.toks.get(self.pos) {
            self.pos += 1;
            return self.unary(depth);
        }
        self.primary(depth)?;
        // Selectors, indexes and calls.
        loop {
            match self.toks.get(self.pos) {
                Some((_, Tok::Dot)) => {
                    self.pos += 1;
                    match self.toks.get(self.pos) {
                        Some((_, Tok::Ident)) => self.pos += 1,
                        _ => return self.fail("a name after '.'"),
                    }
                }
                Some((_, Tok::Open('['))) => {
                    self.pos += 1;
                    self.expr(depth)?;
                    self.close(']')?;
                }
                Some((_, Tok::Open('('))) => {
                    self.pos += 1;
                    if !matches!(self.toks.get(self.pos), Some((_, Tok::Close(')')))) {
                        loop {
                            self.expr(depth)?;
                            if !matches!(self.toks.get(self.pos), Some((_, Tok::Comma))) {
                                break;
                            }
                            self.pos += 1;
                        }
                    }
                    self.close(')')?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn primary(&mut self, depth: usize) -> Result<(), ExprError> {
        match self.toks.get(self.pos) {
            Some((_, Tok::Ident | Tok::Literal)) => {
                self.pos += 1;
                Ok(())
            }
            Some((_, Tok::Open('('))) => {
                self.pos += 1;
                self.expr(depth)?;
                self.close(')')
            }
            _ => self.fail("an operand"),
        }
    }

    fn close(&mut self, c: char) -> Result<(), ExprError> {
        if matches!(self.toks.get(self.pos), Some((_, Tok::Close(x))) if *x == c) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(&format!("{c:?}"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mixer_expressions_parse() {
        for e in [
            "",
            "true",
            r#"(destination.labels["app"]|"unknown") == "productpage""#,
            r#"(source.labels["istio"] | "") == "ingressgateway" && (request.headers["x-user"] | "") == "john""#,
            r#"conditional((context.reporter.kind | "inbound") == "outbound", "client", "server")"#,
            r#"source.ip | ip("0.0.0.0")"#,
            r#"match(request.path, "/foo*") || !connection.mtls"#,
            r#"response.size | 0"#,
            r#"request.headers["x"].startsWith("a")"#,
            r#"response.duration | "0ms""#,
            r#"'single' == `raw`"#,
            "1.5e-3 >= 0x1F",
            "emptyStringMap()",
        ] {
            assert_eq!(check_expression(e), Ok(()), "{e}");
        }
    }

    #[test]
    fn broken_expressions_name_the_position() {
        let cases = [
            ("a ==", 5, "expected an operand, found end of expression"),
            ("(a == b", 8, "expected ')'"),
            (r#"a == "b"#, 6, "unterminated string"),
            ("a b", 3, "unexpected name after a complete expression"),
            ("a.", 3, "expected a name after '.'"),
            ("f(a,)", 5, "expected an operand"),
            ("a = b", 3, "unexpected character '='"),
            ("== a", 1, "expected an operand"),
            ("a[1", 4, "expected ']'"),
            ("12ab", 1, "malformed number"),
            ("a ! b", 3, "expected an operator"),
        ];
        for (text, position, message) in cases {
            let e = check_expression(text).unwrap_err();
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert!(
            check_expression(&deep)
                .unwrap_err()
                .message
                .contains("nested")
        );
    }
}
