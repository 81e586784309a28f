//! The code generated from `proto/`, and the descriptor set that reflection serves.

/// The encoded `FileDescriptorSet` of every batchgate proto (with imports).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("batchgate_descriptor");

/// `batchgate.sutro.v1`: the Sutro jobs service.
pub mod sutro {
    /// Version 1 of the Sutro jobs API.
    pub mod v1 {
        #![allow(missing_docs, clippy::large_enum_variant)]
        tonic::include_proto!("batchgate.sutro.v1");
    }
}

/// `batchgate.xai.v1`: the xAI batches service.
pub mod xai {
    /// Version 1 of the xAI batches API.
    pub mod v1 {
        #![allow(missing_docs, clippy::large_enum_variant)]
        tonic::include_proto!("batchgate.xai.v1");
    }
}
