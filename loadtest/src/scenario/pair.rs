//! Pair style (`GET /?pair=<code>`): side A sends binary probes; side B echoes every
//! binary message back to A, or (`--oneway`) receives and accounts them itself.

use std::rc::Rc;

use crate::ctx::WorkerCtx;
use crate::plan::Style;
use crate::probe;
use crate::stream::{Encoding, Sender, StreamState};
use crate::ws::frame::SendOp;

use super::{
    await_hello, on_binary_probe, open_link, stream_id, unexpected, Pending, SetupError, Unit,
    USER_AGENT,
};

/// Opens side A then side B of pair `index` and checks the route with a hello.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<Unit, SetupError> {
    let Style::Pair { oneway, prefix, .. } = &ctx.plan.style else {
        return Err(SetupError::Unexpected("style"));
    };
    let oneway = *oneway;
    let path = format!("/?pair={prefix}{index}");
    let headers = [("User-Agent", USER_AGENT)];
    let stream = StreamState::new(stream_id(ctx, index, 0));
    let mut pending = Pending::default();
    let (a_ctx, a_stream) = (Rc::clone(ctx), Rc::clone(&stream));
    let side_a = pending.keep(
        open_link(ctx, &path, &headers, move |link, is_text, bytes| {
            if oneway || is_text {
                unexpected(&a_ctx, "pair_unexpected_message");
            } else {
                on_binary_probe(&a_ctx, link, &a_stream, bytes);
            }
        })
        .await?,
    );
    let (b_ctx, b_stream) = (Rc::clone(ctx), Rc::clone(&stream));
    let side_b = pending.keep(
        open_link(ctx, &path, &headers, move |link, is_text, bytes| {
            if is_text {
                unexpected(&b_ctx, "pair_unexpected_text");
            } else if oneway {
                on_binary_probe(&b_ctx, link, &b_stream, bytes);
            } else {
                link.outbox.send(SendOp::Binary, bytes);
            }
        })
        .await?,
    );
    for side in [&side_a, &side_b] {
        side.streams.borrow_mut().push(Rc::clone(&stream));
    }
    let mut hello = Vec::new();
    probe::write_binary_hello(&mut hello, stream.id);
    side_a.outbox.send(SendOp::Binary, &hello);
    await_hello(ctx, if oneway { &side_b } else { &side_a }).await?;
    let sender = Sender {
        stream,
        outbox: Rc::clone(&side_a.outbox),
        encoding: Encoding::Binary(Rc::clone(&ctx.binary_fill)),
        mirrors: Vec::new(),
    };
    Ok(pending.into_unit(vec![sender]))
}
