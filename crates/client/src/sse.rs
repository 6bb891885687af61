//! A server-sent events reader (the WHATWG event stream format), enough for
//! the broker's `/v1/events`: `event:`, `data:` and `id:` fields, comments,
//! and messages split across network reads.
//!
//! The last event id is kept as the format says: an `id:` line sets it and
//! it stays until another one changes it (an empty `id:` clears it). A
//! client that reconnects sends it as `Last-Event-ID`, so that the broker
//! can replay what was missed. A broker that sends no ids leaves it empty.

/// One dispatched message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: String,
    pub data: String,
    /// The stream's last event id when this message was dispatched.
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct Parser {
    buffer: String,
    event: String,
    data: Vec<String>,
    /// The id being collected (the format's "last event ID buffer").
    id: String,
    /// The id as of the last dispatch.
    last_event_id: String,
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
                self.last_event_id.clone_from(&self.id);
                if !self.data.is_empty() || !self.event.is_empty() {
                    messages.push(Message {
                        event: if self.event.is_empty() { "message".into() } else { std::mem::take(&mut self.event) },
                        data: std::mem::take(&mut self.data).join("\n"),
                        id: self.last_event_id(),
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
                // The format ignores an id with a NUL in it.
                "id" if !value.contains('\0') => self.id = value.to_owned(),
                _ => {} // retry: the client's own backoff decides
            }
        }
        messages
    }

    /// The id to send as `Last-Event-ID` when reconnecting, if the broker
    /// sent one.
    pub fn last_event_id(&self) -> Option<String> {
        (!self.last_event_id.is_empty()).then(|| self.last_event_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event: &str, data: &str, id: Option<&str>) -> Message {
        Message { event: event.into(), data: data.into(), id: id.map(Into::into) }
    }

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut parser = Parser::default();
        assert!(parser.push(b"event: hello\nda").is_empty(), "incomplete message held back");
        let messages = parser.push(b"ta: {\"a\":1}\n\n: keep-alive\n\nevent: grant.issued\ndata: x\ndata: y\n\n");
        assert_eq!(
            messages,
            vec![message("hello", "{\"a\":1}", None), message("grant.issued", "x\ny", None)],
            "comments skipped, multi-line data joined"
        );
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let mut parser = Parser::default();
        let messages = parser.push(b"event: hello\r\ndata: 1\r\n\r\n");
        assert_eq!(messages, vec![message("hello", "1", None)]);
    }

    #[test]
    fn sse_event_ids_are_remembered_until_changed_for_last_event_id() {
        let mut parser = Parser::default();
        assert_eq!(parser.last_event_id(), None, "nothing seen yet");
        let messages = parser.push(b"id: 41\nevent: hello\ndata: {}\n\nevent: grant.issued\ndata: x\n\n");
        assert_eq!(
            messages,
            vec![message("hello", "{}", Some("41")), message("grant.issued", "x", Some("41"))],
            "an id holds for the messages after it until another one"
        );
        parser.push(b"id: 42\ndata: y\n");
        assert_eq!(parser.last_event_id().as_deref(), Some("41"), "an id counts once its message is complete");
        parser.push(b"\n");
        assert_eq!(parser.last_event_id().as_deref(), Some("42"), "then it is the one to resume from");
        parser.push(b"id: 4\x003\n\n");
        assert_eq!(parser.last_event_id().as_deref(), Some("42"), "an id with a NUL is ignored");
        parser.push(b": keep-alive\nid\n\n");
        assert_eq!(parser.last_event_id(), None, "an empty id clears it");
    }

    #[test]
    fn a_broker_that_sends_no_ids_leaves_none_to_resume_from() {
        let mut parser = Parser::default();
        let messages = parser.push(b"event: hello\ndata: {}\n\n: keep-alive\n\nevent: resync\ndata: {}\n\n");
        assert!(messages.iter().all(|m| m.id.is_none()), "{messages:?}");
        assert_eq!(parser.last_event_id(), None, "no Last-Event-ID is sent");
    }
}
