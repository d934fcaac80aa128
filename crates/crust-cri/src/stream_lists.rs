//! The Stream* RPCs of CRI 1.37 (StreamPodSandboxes, StreamContainers,
//! StreamContainerStats, StreamPodSandboxStats, StreamImages): the same
//! filters and results as their unary List calls, cut into messages whose
//! encoded size stays under [`CHUNK_BYTES`], so that no node is ever too
//! big to list (a unary List of 10k containers can pass gRPC's 16 MiB).

use std::pin::Pin;

use prost::Message;
use tokio_stream::Stream;
use tonic::Status;

/// The most bytes of items one streamed message carries. Well under Go
/// gRPC's 4 MiB default receive limit; one item larger than this (every
/// item is bounded by crust-spec's limits) travels alone.
pub(crate) const CHUNK_BYTES: usize = 1 << 20;

pub(crate) type ListStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Splits `items` into runs whose encoded size is at most `max_bytes`
/// (each item counted with its field tag and length prefix), keeping
/// their order. A single item over `max_bytes` forms a run of its own.
pub(crate) fn chunks<T: Message>(items: Vec<T>, max_bytes: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut run_bytes = 0;
    for item in items {
        let len = item.encoded_len();
        // tag (one byte for field 1) + varint length + body
        let bytes = 1 + prost::length_delimiter_len(len) + len;
        if !run.is_empty() && run_bytes + bytes > max_bytes {
            out.push(std::mem::take(&mut run));
            run_bytes = 0;
        }
        run_bytes += bytes;
        run.push(item);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// A finished list as a stream of responses built by `wrap`.
pub(crate) fn stream_of<T, R>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> ListStream<R>
where
    T: Message + Send + 'static,
    R: Send + 'static,
{
    let responses: Vec<Result<R, Status>> = chunks(items, CHUNK_BYTES)
        .into_iter()
        .map(|c| Ok(wrap(c)))
        .collect();
    Box::pin(tokio_stream::iter(responses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_cri_api::v1 as cri;

    fn container(name_len: usize) -> cri::Container {
        cri::Container {
            id: "x".repeat(name_len),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_never_exceed_the_bound_and_keep_every_item_in_order() {
        let items: Vec<_> = (0..500).map(|i| container(100 + i % 50)).collect();
        let ids: Vec<String> = items.iter().map(|c| c.id.clone()).collect();
        let chunks = chunks(items, 4096);
        assert!(chunks.len() > 10, "{} chunks", chunks.len());
        for chunk in &chunks {
            let response = cri::StreamContainersResponse {
                containers: chunk.clone(),
            };
            assert!(response.encoded_len() <= 4096, "{}", response.encoded_len());
        }
        let back: Vec<String> = chunks.into_iter().flatten().map(|c| c.id).collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn an_item_over_the_bound_travels_alone_and_nothing_is_empty() {
        let chunks = chunks(vec![container(10), container(5000), container(10)], 4096);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(super::chunks(Vec::<cri::Container>::new(), 4096).is_empty());
    }
}
