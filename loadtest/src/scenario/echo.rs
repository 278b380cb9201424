//! `/v1/echo` (relay started with `--enable-echo`): one connection per unit sends JSON
//! probes and receives them back. Used by `idle --style echo` and as the simplest
//! end-to-end check of the framing.

use std::rc::Rc;

use crate::ctx::WorkerCtx;
use crate::probe;
use crate::stream::{Encoding, Sender, StreamState};
use crate::ws::frame::SendOp;

use super::{
    await_hello, on_json_probe, open_link, stream_id, Pending, SetupError, Unit, USER_AGENT,
};

/// Opens one echo connection and checks the route with a hello.
pub async fn setup(ctx: &Rc<WorkerCtx>, index: usize) -> Result<Unit, SetupError> {
    let stream = StreamState::new(stream_id(ctx, index, 0));
    let (rx_ctx, rx_stream) = (Rc::clone(ctx), Rc::clone(&stream));
    let mut pending = Pending::default();
    let link = pending.keep(
        open_link(
            ctx,
            "/v1/echo",
            &[("User-Agent", USER_AGENT)],
            move |link, _, bytes| on_json_probe(&rx_ctx, link, &rx_stream, bytes),
        )
        .await?,
    );
    link.streams.borrow_mut().push(Rc::clone(&stream));
    let mut hello = Vec::new();
    probe::write_json_hello(&mut hello, stream.id);
    link.outbox.send(SendOp::Text, &hello);
    await_hello(ctx, &link).await?;
    let sender = Sender {
        stream,
        outbox: Rc::clone(&link.outbox),
        encoding: Encoding::Json(Rc::clone(&ctx.json_pad)),
        mirrors: Vec::new(),
    };
    Ok(pending.into_unit(vec![sender]))
}
