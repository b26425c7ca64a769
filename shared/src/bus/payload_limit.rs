//! What the bus carries: NATS refuses a message whose payload exceeds the server's
//! `max_payload` (1 MiB by default, set in the server's configuration). A refused publish
//! fails the same way on every redelivery, so a message that cannot fit must be answered or
//! cut down by whoever makes it, never retried.

use super::Bus;

/// Below this a payload is taken to fit without asking the connection for the server's
/// `max_payload` (a copy of its whole `INFO`): far below any server's.
pub const SMALL_PAYLOAD: usize = 64 << 10;
/// Room left under `max_payload` for a message's headers (msg id, trace context).
const HEADER_ROOM: usize = 4 << 10;

impl Bus {
    /// The server's `max_payload`, as it announced on connecting.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Whether a payload of `len` bytes, with its headers, fits in one message.
    pub fn fits(&self, len: usize) -> bool {
        len <= SMALL_PAYLOAD || len.saturating_add(HEADER_ROOM) <= self.max_payload()
    }
}
