//! A server-sent events reader (the WHATWG event stream format), enough for
//! the broker's `/v1/events`: `event:` and `data:` fields, comments, and
//! messages split across network reads.

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    buffer: String,
    event: String,
    data: Vec<String>,
}

impl Parser {
    /// Feeds bytes as they arrive; returns the messages they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.find('\n') {
            let line: String = self.buffer.drain(..=end).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    messages.push(Message {
                        event: if self.event.is_empty() { "message".into() } else { std::mem::take(&mut self.event) },
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: keep-alive
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {} // id, retry: not used by the broker
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut parser = Parser::default();
        assert!(parser.push(b"event: hello\nda").is_empty(), "incomplete message held back");
        let messages = parser.push(b"ta: {\"a\":1}\n\n: keep-alive\n\nevent: grant.issued\ndata: x\ndata: y\n\n");
        assert_eq!(
            messages,
            vec![
                Message { event: "hello".into(), data: "{\"a\":1}".into() },
                Message { event: "grant.issued".into(), data: "x\ny".into() },
            ],
            "comments skipped, multi-line data joined"
        );
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let mut parser = Parser::default();
        let messages = parser.push(b"event: hello\r\ndata: 1\r\n\r\n");
        assert_eq!(messages, vec![Message { event: "hello".into(), data: "1".into() }]);
    }
}
