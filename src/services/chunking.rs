//! Cutting a long sequence into ordered groups under a size budget: result rows into
//! gRPC messages, add-requests into upstream calls.

/// Splits `items`, in order, into groups of at most `max_bytes` (as measured by
/// `size_of`) and at most `max_items` items (0: no count limit). An item larger
/// than `max_bytes` on its own travels alone.
pub fn chunk_by<T>(
    items: impl IntoIterator<Item = T>,
    size_of: impl Fn(&T) -> usize,
    max_bytes: usize,
    max_items: usize,
) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut size = 0;
    for item in items {
        let item_size = size_of(&item);
        let full = max_items > 0 && group.len() >= max_items;
        if !group.is_empty() && (size + item_size > max_bytes || full) {
            groups.push(std::mem::take(&mut group));
            size = 0;
        }
        size += item_size;
        group.push(item);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// `message`, unless it is over what one gRPC message carries. A chunk is over only
/// when a single item is (it travels alone), and the transport would cut the stream
/// with a bare OUT_OF_RANGE; this says which item instead.
pub fn within_message_limit<M: prost::Message>(
    message: M,
    item: impl FnOnce(&M) -> String,
) -> crate::error::Result<M> {
    let size = message.encoded_len();
    if size > crate::config::MAX_MESSAGE_BYTES {
        return Err(crate::error::Error::FailedPrecondition(format!(
            "{} is {size} bytes, more than one gRPC message carries ({} bytes)",
            item(&message),
            crate::config::MAX_MESSAGE_BYTES
        )));
    }
    Ok(message)
}

/// The bytes a message adds to a `repeated` field of its parent: tag, length, body.
pub fn repeated_field_size<M: prost::Message>(message: &M) -> usize {
    let len = message.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keep_order_and_respect_both_limits() {
        let groups = chunk_by(1..=10, |_| 10, 35, 0);
        assert_eq!(
            groups,
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]
        );
        let groups = chunk_by(1..=5, |_| 1, 1000, 2);
        assert_eq!(groups, vec![vec![1, 2], vec![3, 4], vec![5]]);
        let groups = chunk_by([5, 500, 5], |n| *n, 100, 0);
        assert_eq!(groups, vec![vec![5], vec![500], vec![5]]);
        assert!(chunk_by(Vec::<u8>::new(), |_| 1, 10, 0).is_empty());
    }
}
