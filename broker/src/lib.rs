//! The corebus broker: shards, storage, handlers. Filled by the storage and broker issues.
