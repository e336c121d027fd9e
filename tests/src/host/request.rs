//! One HTTP stream through the filter, fed the way Envoy's filter manager
//! feeds a Wasm HTTP filter.

use super::abi::{len_u32, Action};
use super::headers::{header_map, HeaderMap};
use super::shared::Flow;
use super::vm::{lock, LocalReply, Phase};
use super::{Host, HostInner};
use anyhow::{anyhow, bail};

/// A request on one worker. Methods that run guest code return the filter's
/// [`Action`] or the trap that killed the VM.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    host: Host,
    worker: usize,
    context: u32,
}

impl HttpRequest {
    pub(crate) fn new(host: Host, worker: usize, context: u32) -> Self {
        Self {
            host,
            worker,
            context,
        }
    }

    /// The proxy-wasm context id of this request in its worker's VM.
    pub fn context_id(&self) -> u32 {
        self.context
    }

    pub fn worker(&self) -> usize {
        self.worker
    }

    /// A property of this request, e.g. `["source", "address"]` or
    /// `["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"]`
    /// (see [`super::encode_property_map`] for struct values).
    pub fn set_property(&self, path: &[&str], value: impl Into<Vec<u8>>) {
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        let value = value.into();
        self.host.with_inner(|inner| {
            if let Ok(stream) = inner.stream_mut(self.worker, self.context) {
                stream.properties.insert(path, value);
            }
        });
    }

    /// Request headers (names are lowercased as Envoy's codecs do).
    pub fn headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_headers(
                self.worker,
                self.context,
                Flow::Request,
                header_map(headers),
                end_of_stream,
            )
        })
    }

    /// A request body chunk. While the filter answers `Pause`, chunks
    /// accumulate and the filter sees (and may edit) everything buffered.
    /// After a local reply or a reset the filter is not called and `Pause`
    /// is returned (Envoy no longer feeds it).
    pub fn body(&self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_body(
                self.worker,
                self.context,
                Flow::Request,
                chunk,
                end_of_stream,
            )
        })
    }

    pub fn trailers(&self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_trailers(
                self.worker,
                self.context,
                Flow::Request,
                header_map(trailers),
            )
        })
    }

    /// Response headers from the upstream (filter's `on_http_response_headers`).
    pub fn response_headers(
        &self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_headers(
                self.worker,
                self.context,
                Flow::Response,
                header_map(headers),
                end_of_stream,
            )
        })
    }

    pub fn response_body(&self, chunk: &[u8], end_of_stream: bool) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_body(
                self.worker,
                self.context,
                Flow::Response,
                chunk,
                end_of_stream,
            )
        })
    }

    pub fn response_trailers(&self, trailers: &[(&str, &str)]) -> anyhow::Result<Action> {
        self.host.with_inner(|inner| {
            inner.stream_trailers(
                self.worker,
                self.context,
                Flow::Response,
                header_map(trailers),
            )
        })
    }

    /// Ends the stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    /// HTTP calls the request still has pending are cancelled (Envoy cancels
    /// them when the context goes), so answering them later is an error.
    pub fn done(&self) -> anyhow::Result<()> {
        self.host
            .with_inner(|inner| inner.finish(self.worker, self.context))
    }

    fn read<R>(&self, f: impl FnOnce(&super::vm::StreamState) -> R) -> Option<R> {
        self.host
            .with_inner(|inner| inner.stream(self.worker, self.context).map(f))
    }

    pub fn local_reply(&self) -> Option<LocalReply> {
        self.read(|s| s.local_reply.clone()).flatten()
    }

    /// The request headers as they went upstream (a snapshot taken when the
    /// filter let them go); empty if they never did.
    pub fn upstream_headers(&self) -> HeaderMap {
        self.read(|s| s.request.sent_headers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// Whether the request headers went upstream at all.
    pub fn forwarded(&self) -> bool {
        self.read(|s| s.request.sent_headers.is_some())
            .unwrap_or(false)
    }

    /// The request body bytes that went upstream.
    pub fn upstream_body(&self) -> Vec<u8> {
        self.read(|s| s.request.sent_body.clone())
            .unwrap_or_default()
    }

    pub fn upstream_trailers(&self) -> Option<HeaderMap> {
        self.read(|s| s.request.sent_trailers.clone()).flatten()
    }

    /// The request header map as the filter has left it so far (whether or
    /// not it went upstream).
    pub fn request_headers(&self) -> HeaderMap {
        self.read(|s| s.request.headers.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// The response headers as they went to the client.
    pub fn downstream_headers(&self) -> HeaderMap {
        self.read(|s| s.response.sent_headers.clone())
            .flatten()
            .unwrap_or_default()
    }

    pub fn downstream_body(&self) -> Vec<u8> {
        self.read(|s| s.response.sent_body.clone())
            .unwrap_or_default()
    }

    /// The filter called `proxy_continue_stream` for the request.
    pub fn continued(&self) -> bool {
        self.read(|s| s.request.continued).unwrap_or(false)
    }

    /// The filter closed (reset) the stream with `proxy_close_stream`.
    pub fn was_reset(&self) -> bool {
        self.read(|s| s.reset).unwrap_or(false)
    }

    /// What `proxy_on_done` answered (None before `done`).
    pub fn on_done_result(&self) -> Option<bool> {
        self.read(|s| s.on_done_result).flatten()
    }
}

fn callback(flow: Flow, part: &str) -> String {
    let side = match flow {
        Flow::Request => "request",
        Flow::Response => "response",
    };
    format!("proxy_on_{side}_{part}")
}

impl HostInner {
    fn open_stream(
        &mut self,
        worker: usize,
        context: u32,
        flow: Flow,
        what: &str,
    ) -> anyhow::Result<()> {
        let stream = self.stream_mut(worker, context)?;
        match stream.phase {
            Phase::Deleted => bail!("{what} after done() on context {context}"),
            Phase::NotCreated if flow == Flow::Response || what != "headers" => {
                bail!("{what} before the request headers on context {context}")
            }
            _ => {}
        }
        if stream.flow(flow).end_of_stream {
            bail!("{what} after end of stream on context {context}");
        }
        Ok(())
    }

    /// Applies what the filter answered, unless it already answered the
    /// client itself.
    fn apply(&mut self, worker: usize, context: u32, flow: Flow, action: Action) {
        if let Ok(stream) = self.stream_mut(worker, context) {
            if stream.stopped() {
                return;
            }
            let state = stream.flow_mut(flow);
            match action {
                Action::Continue => state.release(),
                Action::Pause => state.held = true,
            }
        }
    }

    fn run_filter(
        &mut self,
        worker: usize,
        context: u32,
        flow: Flow,
        part: &str,
        params: (u32, u32, u32),
    ) -> anyhow::Result<Action> {
        let export = callback(flow, part);
        let raw = if part == "trailers" {
            self.call::<(u32, u32), u32>(worker, context, &export, (params.0, params.1))?
        } else {
            self.call::<(u32, u32, u32), u32>(worker, context, &export, params)?
        };
        let action = match raw {
            None => Action::Continue,
            Some(raw) => Action::from_raw(raw)
                .ok_or_else(|| anyhow!("{export} returned unknown action {raw}"))?,
        };
        self.apply(worker, context, flow, action);
        self.drain()?;
        Ok(action)
    }

    pub(crate) fn stream_headers(
        &mut self,
        worker: usize,
        context: u32,
        flow: Flow,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        self.open_stream(worker, context, flow, "headers")?;
        let stream = self.stream_mut(worker, context)?;
        if stream.flow(flow).headers.is_some() {
            bail!("headers sent twice on context {context}");
        }
        if stream.stopped() {
            return Ok(Action::Pause);
        }
        let count = len_u32(headers.len());
        let state = stream.flow_mut(flow);
        state.headers = Some(headers);
        state.end_of_stream = end_of_stream;
        if stream.phase == Phase::NotCreated {
            stream.phase = Phase::Open;
            let root = stream.root_context;
            self.call::<(u32, u32), ()>(
                worker,
                context,
                "proxy_on_context_create",
                (context, root),
            )?;
        }
        self.run_filter(
            worker,
            context,
            flow,
            "headers",
            (context, count, u32::from(end_of_stream)),
        )
    }

    pub(crate) fn stream_body(
        &mut self,
        worker: usize,
        context: u32,
        flow: Flow,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> anyhow::Result<Action> {
        self.open_stream(worker, context, flow, "body")?;
        let stream = self.stream_mut(worker, context)?;
        if stream.stopped() {
            return Ok(Action::Pause);
        }
        let state = stream.flow_mut(flow);
        let buffered = state.body.get_or_insert_with(Vec::new);
        buffered.extend_from_slice(chunk);
        let size = len_u32(buffered.len());
        state.end_of_stream = end_of_stream;
        self.run_filter(
            worker,
            context,
            flow,
            "body",
            (context, size, u32::from(end_of_stream)),
        )
    }

    pub(crate) fn stream_trailers(
        &mut self,
        worker: usize,
        context: u32,
        flow: Flow,
        trailers: HeaderMap,
    ) -> anyhow::Result<Action> {
        self.open_stream(worker, context, flow, "trailers")?;
        let stream = self.stream_mut(worker, context)?;
        if stream.stopped() {
            return Ok(Action::Pause);
        }
        let count = len_u32(trailers.len());
        let state = stream.flow_mut(flow);
        state.trailers = Some(trailers);
        state.end_of_stream = true;
        self.run_filter(worker, context, flow, "trailers", (context, count, 0))
    }

    pub(crate) fn finish(&mut self, worker: usize, context: u32) -> anyhow::Result<()> {
        let stream = self.stream_mut(worker, context)?;
        match stream.phase {
            Phase::Deleted => bail!("done() twice on context {context}"),
            Phase::NotCreated => {
                // The VM never heard of this request.
                stream.phase = Phase::Deleted;
                return Ok(());
            }
            Phase::Open => {}
        }
        let done = self.call::<u32, u32>(worker, context, "proxy_on_done", context)?;
        self.stream_mut(worker, context)?.on_done_result = Some(done != Some(0));
        self.enter_access_log_phase(worker, context, true)?;
        let logged = self.call::<u32, ()>(worker, context, "proxy_on_log", context);
        self.enter_access_log_phase(worker, context, false)?;
        logged?;
        self.call::<u32, ()>(worker, context, "proxy_on_delete", context)?;
        self.stream_mut(worker, context)?.phase = Phase::Deleted;
        lock(&self.shared)
            .calls
            .retain(|_, call| !(call.worker == worker && call.context == context));
        self.drain()
    }

    /// During `proxy_on_log` Envoy shows the response the client got: for a
    /// local reply, its status and headers.
    fn enter_access_log_phase(
        &mut self,
        worker: usize,
        context: u32,
        entering: bool,
    ) -> anyhow::Result<()> {
        let state = self.worker_mut(worker)?.store.data_mut();
        state.access_log_phase = entering;
        if let (true, Some(stream)) = (entering, state.streams.get_mut(&context)) {
            if let (None, Some(reply)) = (&stream.response.headers, &stream.local_reply) {
                let status = reply.status.to_string();
                let mut headers = vec![(":status", status.as_str())];
                headers.extend(reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                stream.response.headers = Some(header_map(&headers));
            }
        }
        Ok(())
    }
}
