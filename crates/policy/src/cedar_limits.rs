//! How deep a Cedar policy may nest, checked on its text before the Cedar
//! parser sees it.
//!
//! Cedar's parser, validator and evaluator recurse once per level of the
//! expression tree, and a thread's stack is finite: a policy file with 160
//! nested parentheses overflowed a 2 MiB stack (a tokio worker's, where the
//! broker reloads policy), and 10,000 chained `&&` did too. A stack overflow
//! aborts the process: a broken policy would have taken the broker down
//! instead of being refused with the last good policy kept. Found by
//! `policy_loader_never_panics_on_arbitrary_cedar`.
//!
//! Two bounds keep every tree shallow, far above anything a person writes:
//! brackets nest at most [`MAX_BRACKET_DEPTH`] deep, and one policy has at
//! most [`MAX_OPERATORS`] operators (each can add a level without a
//! bracket: `a && b && …`, `if … then if …`, `x.a.b.…`).

/// Deepest nesting of `(`, `[` and `{` a Cedar file may have.
pub(crate) const MAX_BRACKET_DEPTH: usize = 32;
/// Most operators one policy (up to its `;`) may have.
pub(crate) const MAX_OPERATORS: usize = 500;

/// Where the text first goes past a bound, and which: `(byte offset, message)`.
pub(crate) fn too_deep(text: &str) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        let next = bytes.get(at + 1).copied();
        match byte {
            b'"' => {
                // A string literal: skip to its closing quote, escapes included.
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if next == Some(b'/') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_BRACKET_DEPTH {
                    let message = format!("brackets nest deeper than {MAX_BRACKET_DEPTH} levels: write it flatter");
                    return Some((at, message));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' => operators = 0,
            // `&&`, `==`, `<=` … count once, at their last character.
            b'&' | b'|' | b'=' | b'!' | b'<' | b'>' | b'+' | b'-' | b'*' | b'.'
                if !matches!(next, Some(b'&' | b'|' | b'=')) =>
            {
                operators += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = at;
                while at + 1 < bytes.len() && (bytes[at + 1].is_ascii_alphanumeric() || bytes[at + 1] == b'_') {
                    at += 1;
                }
                if matches!(&text[start..=at], "if" | "in" | "has" | "like" | "is") {
                    operators += 1;
                }
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            let message = format!("a policy with more than {MAX_OPERATORS} operators: split it into several");
            return Some((at.min(bytes.len().saturating_sub(1)), message));
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_policies_pass_and_deep_ones_are_located() {
        let demo = include_str!("../../../demo/policy/requests.cedar");
        assert_eq!(too_deep(demo), None, "the demo policy is far within the bounds");
        let nested =
            format!("permit(principal, action, resource) when {{ {}true{} }};", "(".repeat(40), ")".repeat(40));
        let (offset, message) = too_deep(&nested).expect("40 parentheses deep is refused");
        assert_eq!(offset, nested.find("((").unwrap_or(0) + 31, "located at the 32nd parenthesis, the 33rd bracket");
        assert!(message.contains("deeper than 32"), "{message}");
        let chained = format!("permit(principal, action, resource) when {{ true{} }};", " && true".repeat(600));
        assert!(too_deep(&chained).is_some_and(|(_, m)| m.contains("more than 500 operators")), "a long chain");
        let many = "permit(principal, action, resource) when { 1 + 1 == 2 };\n".repeat(600);
        assert_eq!(too_deep(&many), None, "the count is per policy, not per file");
        let quoted =
            format!("permit(principal, action, resource) when {{ context.reason == \"{}\" }};", "((".repeat(100));
        assert_eq!(too_deep(&quoted), None, "brackets in a string are text");
        let commented = format!("// {}\npermit(principal, action, resource);", "&& [".repeat(600));
        assert_eq!(too_deep(&commented), None, "comments are text");
    }
}
