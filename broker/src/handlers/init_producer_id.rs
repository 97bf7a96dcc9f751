//! InitProducerId (key 22): hands an idempotent producer a producer id that was never given
//! before, also across crashes (the controller commits each block of ids before using it),
//! with epoch 0; a producer that presents its id and epoch (KIP-360) gets the next epoch.
//! Transactional producers get TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a fatal error that
//! clients report as such, until transactions exist.
//!
//! Never: reuses a producer id; bumps the epoch of an id this cluster never issued.

use std::rc::Rc;

use corebus_wire::error_code::ResponseError;
use corebus_wire::kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};

use crate::metadata::MetadataError;
use crate::shard::{Shard, ShardId};

pub async fn handle(
    shard: &Rc<Shard>,
    request: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let refuse = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        tracing::info!("transactional InitProducerId refused: transactions are not supported yet");
        return refuse(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    if pid >= 0 && epoch >= 0 {
        // KIP-360: the producer keeps its id with the next epoch, if we issued the id.
        if pid < shard.metadata().next_producer_id && epoch < i16::MAX - 1 {
            return InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch + 1);
        }
        if pid >= shard.metadata().next_producer_id {
            return refuse(ResponseError::InvalidProducerEpoch);
        }
    }
    let allocated = shard
        .on_shard(ShardId::CONTROLLER, |s0: Rc<Shard>| async move {
            match s0.controller() {
                Some(c) => c.next_producer_id().await,
                None => Err(MetadataError::NotController),
            }
        })
        .await;
    match allocated {
        Ok(Ok(id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot allocate a producer id");
            // Clients retry these two; a storage failure is for the local file failing.
            refuse(match e {
                MetadataError::Unavailable(_)
                | MetadataError::Conflict(_)
                | MetadataError::NotController => ResponseError::CoordinatorNotAvailable,
                _ => ResponseError::KafkaStorageError,
            })
        }
        Err(_) => refuse(ResponseError::CoordinatorNotAvailable),
    }
}
