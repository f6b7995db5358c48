//! Header blocks of an [`H2Connection`]: HEADERS and PUSH_PROMISE start one, CONTINUATION
//! frames extend it, and the finished block is decoded (HPACK) into the client's request or
//! the server's response and trailers of its stream.

use super::*;

impl H2Connection {
    /// HEADERS or PUSH_PROMISE: a header block starts.
    pub(super) fn on_block_start(
        &mut self,
        dir: Dir,
        frame: &Frame,
        events: &mut Vec<H2Event>,
    ) -> Result<(), DesyncReason> {
        let header = frame.header;
        let push = header.ty == PUSH_PROMISE;
        let side = self.side_mut(dir);
        if push {
            side.stats.push_promise_frames += 1;
        } else {
            side.stats.headers_frames += 1;
        }
        if header.stream == 0 || (push && dir == Dir::ClientToServer) {
            return Err(DesyncReason::BadFrame);
        }
        let p = &frame.payload;
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        let mut at = 0usize;
        let mut pad = 0usize;
        if header.has(FLAG_PADDED) {
            pad = usize::from(*p.first().ok_or(DesyncReason::BadPadding)?);
            at = 1;
        }
        let mut promised = None;
        if push {
            promised = Some(be32(p, at).ok_or(DesyncReason::BadFrame)? & 0x7fff_ffff);
            at += 4;
        } else if header.has(FLAG_PRIORITY) {
            at += 5;
        }
        let fragment_end = len
            .checked_sub(pad)
            .filter(|&end| end >= at)
            .ok_or(DesyncReason::BadPadding)?;
        let lost = if frame.missing > 0 {
            Some(DesyncReason::Gap)
        } else if !frame.whole() {
            Some(DesyncReason::HeaderBlockTooLarge)
        } else {
            None
        };
        let buf = match lost {
            None => p.get(at..fragment_end).unwrap_or_default().to_vec(),
            Some(_) => Vec::new(),
        };
        if let Some(promised_stream_id) = promised {
            events.push(H2Event::PushPromise {
                stream_id: header.stream,
                promised_stream_id,
            });
        }
        let block = Block {
            stream: header.stream,
            promised,
            end_stream: !push && header.has(FLAG_END_STREAM),
            buf,
            lost,
        };
        if header.has(FLAG_END_HEADERS) {
            self.finish_block(dir, block, events);
        } else {
            self.side_mut(dir).block = Some(block);
        }
        Ok(())
    }

    pub(super) fn on_continuation(&mut self, dir: Dir, frame: &Frame, events: &mut Vec<H2Event>) {
        let header = frame.header;
        let side = self.side_mut(dir);
        side.stats.continuation_frames += 1;
        let Some(mut block) = side.block.take().filter(|b| b.stream == header.stream) else {
            // No block in progress on this stream: the block (if any) is broken.
            let orphan = side.block.take();
            self.header_desync(dir, DesyncReason::BadContinuation, events);
            if let Some(block) = orphan {
                self.finish_block(dir, block, events);
            }
            return;
        };
        if frame.missing > 0 {
            block.lost.get_or_insert(DesyncReason::Gap);
        } else if !frame.whole() || block.buf.len() + frame.payload.len() > MAX_HEADER_BLOCK {
            block.lost.get_or_insert(DesyncReason::HeaderBlockTooLarge);
        }
        if block.lost.is_none() {
            block.buf.reserve_exact(frame.payload.len());
            block.buf.extend_from_slice(&frame.payload);
        } else {
            block.buf = Vec::new();
        }
        if header.has(FLAG_END_HEADERS) {
            self.finish_block(dir, block, events);
        } else {
            self.side_mut(dir).block = Some(block);
        }
    }

    /// A header block is complete (or given up): decode it if possible, then apply it.
    pub(super) fn finish_block(&mut self, dir: Dir, block: Block, events: &mut Vec<H2Event>) {
        let side = self.side_mut(dir);
        let mut fields = None;
        let mut failure = None;
        if side.headers_ok {
            match block.lost {
                Some(reason) => failure = Some(reason),
                None => {
                    let mut f = Fields::default();
                    match side.hpack.decode(&block.buf, |n, v| f.add(n, v)) {
                        Ok(()) => fields = Some(f),
                        Err(e) => {
                            failure = Some(match e {
                                HpackError::Invalid(_) => DesyncReason::HpackError,
                                HpackError::TooManyFields => DesyncReason::TooManyHeaders,
                                HpackError::Limit(_) => DesyncReason::HpackLimit,
                            });
                        }
                    }
                }
            }
        }
        let side = self.side_mut(dir);
        if fields.is_some() {
            side.stats.header_blocks += 1;
        } else {
            side.stats.header_blocks_skipped += 1;
        }
        if let Some(reason) = failure {
            self.header_desync(dir, reason, events);
        }
        if block.promised.is_some() {
            return;
        }
        match dir {
            Dir::ClientToServer => {
                self.client_block(block.stream, fields, block.end_stream, events)
            }
            Dir::ServerToClient => {
                self.server_block(block.stream, fields, block.end_stream, events)
            }
        }
    }

    /// A client header block: a new stream's request, or trailers.
    pub(super) fn client_block(
        &mut self,
        stream_id: u32,
        fields: Option<Fields>,
        end_stream: bool,
        events: &mut Vec<H2Event>,
    ) {
        if self.streams.contains_key(&stream_id) {
            // Trailers (or a second block) on an open stream.
            if end_stream {
                self.side_ended(Dir::ClientToServer, stream_id, events);
            }
            return;
        }
        if stream_id.is_multiple_of(2) || stream_id <= self.last_client_stream {
            // Closed, untracked or not the client's to open.
            self.side_mut(Dir::ClientToServer)
                .stats
                .frames_on_untracked_streams += 1;
            return;
        }
        self.last_client_stream = stream_id;
        if self.streams.len() >= MAX_STREAMS {
            self.stats.untracked_streams += 1;
            events.push(H2Event::StreamNotTracked { stream_id });
            return;
        }
        let decoded = fields.is_some();
        let f = fields.unwrap_or_default();
        let grpc = is_grpc(f.content_type.as_deref());
        events.push(H2Event::Request(Request {
            stream_id,
            method: f.method,
            path: f.path,
            authority: f.authority,
            scheme: f.scheme,
            content_type: f.content_type,
            headers: f.headers,
            headers_omitted: f.omitted,
            truncated: f.truncated,
            malformed: f.malformed,
            is_grpc: grpc,
            decoded,
            end_stream,
        }));
        self.streams.insert(
            stream_id,
            Stream {
                request_ended: end_stream,
                is_grpc: grpc,
                ..Stream::default()
            },
        );
        self.stats.streams += 1;
        self.stats.max_concurrent = self.stats.max_concurrent.max(self.streams.len());
    }

    /// A server header block: informational, final response, or trailers.
    pub(super) fn server_block(
        &mut self,
        stream_id: u32,
        fields: Option<Fields>,
        end_stream: bool,
        events: &mut Vec<H2Event>,
    ) {
        let Some(st) = self.streams.get_mut(&stream_id) else {
            self.side_mut(Dir::ServerToClient)
                .stats
                .frames_on_untracked_streams += 1;
            return;
        };
        let decoded = fields.is_some();
        let f = fields.unwrap_or_default();
        if !st.final_seen {
            if f.status.is_some_and(|s| (100..200).contains(&s)) && !end_stream {
                return; // 1xx: the final response is still to come.
            }
            st.final_seen = true;
            let grpc = st.is_grpc || is_grpc(f.content_type.as_deref());
            let resp = Response {
                stream_id,
                status: f.status,
                content_type: f.content_type,
                grpc_status: f.grpc_status,
                grpc_message: f.grpc_message,
                decoded,
                trailers: false,
            };
            if grpc && !end_stream {
                st.pending = Some(resp);
            } else {
                events.push(H2Event::Response(resp));
            }
        } else if let Some(mut resp) = st.pending.take() {
            resp.trailers = true;
            resp.decoded &= decoded;
            resp.grpc_status = f.grpc_status.or(resp.grpc_status);
            resp.grpc_message = f.grpc_message.or(resp.grpc_message);
            events.push(H2Event::Response(resp));
        }
        if end_stream {
            self.side_ended(Dir::ServerToClient, stream_id, events);
        }
    }
}
