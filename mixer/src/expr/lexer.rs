//! Turns expression text into tokens.

/// One token, with the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Ident(String),
    String(String),
    Int(i64),
    True,
    False,
    LBracket,
    RBracket,
    LParen,
    RParen,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    Pipe,
    Bang,
    Comma,
}

/// A lexical error at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {message}")]
pub struct LexError {
    pub offset: usize,
    pub message: String,
}

/// Splits `text` into `(offset, token)` pairs.
pub fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, LexError> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |offset: usize, message: String| LexError { offset, message };
    while i < chars.len() {
        let (off, c) = chars[i];
        let next = chars.get(i + 1).map(|(_, c)| *c);
        match c {
            c if c.is_whitespace() => i += 1,
            ',' => {
                out.push((off, Token::Comma));
                i += 1;
            }
            '[' => {
                out.push((off, Token::LBracket));
                i += 1;
            }
            ']' => {
                out.push((off, Token::RBracket));
                i += 1;
            }
            '(' => {
                out.push((off, Token::LParen));
                i += 1;
            }
            ')' => {
                out.push((off, Token::RParen));
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push((off, Token::EqEq));
                i += 2;
            }
            '!' if next == Some('=') => {
                out.push((off, Token::NotEq));
                i += 2;
            }
            '!' => {
                out.push((off, Token::Bang));
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push((off, Token::AndAnd));
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push((off, Token::OrOr));
                i += 2;
            }
            '|' => {
                out.push((off, Token::Pipe));
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(err(off, "unterminated string".into()));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&(eoff, e)) = chars.get(i) else {
                                return Err(err(off, "unterminated string".into()));
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                other => {
                                    return Err(err(eoff, format!("unknown escape \\{other}")));
                                }
                            });
                        }
                        c => s.push(c),
                    }
                }
                out.push((off, Token::String(s)));
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(err(off, "unterminated raw string".into()));
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    s.push(c);
                }
                out.push((off, Token::String(s)));
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while chars.get(i).is_some_and(|(_, c)| c.is_ascii_digit()) {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().map(|(_, c)| *c).collect();
                let n = digits
                    .parse::<i64>()
                    .map_err(|e| err(off, format!("bad integer {digits}: {e}")))?;
                out.push((off, Token::Int(n)));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().map(|(_, c)| *c).collect();
                if word.ends_with('.') {
                    return Err(err(off, format!("bad attribute name {word:?}")));
                }
                out.push((
                    off,
                    match word.as_str() {
                        "true" => Token::True,
                        "false" => Token::False,
                        _ => Token::Ident(word),
                    },
                ));
            }
            other => return Err(err(off, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t: Vec<Token> = tokenize(r#"a.b["k"] == "v\"x" && !(c != 3) || d | `raw` false"#)
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(
            t,
            vec![
                Token::Ident("a.b".into()),
                Token::LBracket,
                Token::String("k".into()),
                Token::RBracket,
                Token::EqEq,
                Token::String("v\"x".into()),
                Token::AndAnd,
                Token::Bang,
                Token::LParen,
                Token::Ident("c".into()),
                Token::NotEq,
                Token::Int(3),
                Token::RParen,
                Token::OrOr,
                Token::Ident("d".into()),
                Token::Pipe,
                Token::String("raw".into()),
                Token::False,
            ]
        );
    }

    #[test]
    fn errors_name_the_offset() {
        assert_eq!(tokenize(r#"a == "x"#).unwrap_err().offset, 5);
        assert_eq!(tokenize("a = b").unwrap_err().offset, 2);
        assert!(tokenize("a == 'x'").is_err());
    }
}
