//! Server-sent events, as providers stream them: `data:` lines grouped into events by a blank
//! line. Just enough of the format for chat streams; bytes may arrive split anywhere.

/// One event: its `event:` name (if any) and its `data:` lines joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Decoder {
    buf: String,
}

impl Decoder {
    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        loop {
            let normalized = self.buf.replace("\r\n", "\n");
            let Some(end) = normalized.find("\n\n") else {
                self.buf = normalized;
                break;
            };
            let block = normalized[..end].to_string();
            self.buf = normalized[end + 2..].to_string();
            let mut name = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                }
            }
            if !data.is_empty() || name.is_some() {
                events.push(Event {
                    name,
                    data: data.join("\n"),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let mut d = Decoder::default();
        assert!(d.push(b"data: {\"a\"").is_empty());
        let events = d.push(b":1}\n\nevent: ping\r\ndata: x\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(
            events,
            vec![
                Event {
                    name: None,
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: Some("ping".into()),
                    data: "x".into()
                },
                Event {
                    name: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }
}
