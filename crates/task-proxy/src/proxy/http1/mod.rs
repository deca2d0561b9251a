//! HTTP/1 in one place: heads ([`head`]), the hop-by-hop policy ([`hop_by_hop`]) and chunked
//! framing ([`chunked`]). The relay parses and writes heads with them, the framing guard in
//! front of hyper (`proxy/framing.rs`) checks request heads and follows chunked bodies with
//! them, and hyper's head rewriting (`proxy/forward.rs`) drops hop-by-hop headers by the same
//! rule, so the paths cannot drift apart. Parsing is `httparse`'s (heads and chunk sizes);
//! what is hand-written is only what `httparse` leaves to its caller: classifying names,
//! deciding a message's framing, and following a chunked body in a stream that is passed on
//! unchanged.

pub mod chunked;
pub mod head;
pub mod hop_by_hop;
