//! DescribeLogDirs (key 35): the one data directory, with the size of each requested partition
//! this broker holds a replica of, leader or follower (all of them when the request names
//! none) and, from v4, the file system's total and usable bytes. Offset lags are 0: followers
//! do not report their lag yet.
//!
//! Never: lists a partition that does not exist (Kafka leaves unknown ones out).

use std::rc::Rc;

use corebus_wire::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use corebus_wire::kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};

use super::common::{Route, on_partition_logs, str_bytes};
use crate::shard::Shard;

/// First version with the directory's total and usable bytes.
const SPACE_VERSION: i16 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let image = shard.metadata();
    let wanted: Vec<(String, i32)> = match request.topics {
        None => image
            .topics
            .values()
            .flat_map(|t| (0..t.partitions.len() as i32).map(move |p| (t.name.clone(), p)))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .flat_map(|t| {
                let name = t.topic.0.to_string();
                t.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect(),
    };
    let items = wanted.iter().map(|(n, p)| (n.clone(), *p, ())).collect();
    let sizes = on_partition_logs(shard, Route::Replica, items, |_, _, log, ()| async move {
        Ok::<i64, i16>(log.size_bytes() as i64)
    })
    .await;
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for ((name, partition), size) in wanted.into_iter().zip(sizes) {
        let Ok(size) = size else { continue };
        let entry = DescribeLogDirsPartition::default()
            .with_partition_index(partition)
            .with_partition_size(size)
            .with_offset_lag(0);
        match topics.iter_mut().find(|t| t.name.0.as_str() == name) {
            Some(t) => t.partitions.push(entry),
            None => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let dir = std::fs::canonicalize(&shard.config.data_dir)
        .unwrap_or_else(|_| shard.config.data_dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics);
    if version >= SPACE_VERSION
        && let Some((total, usable)) = space(&dir)
    {
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// (total, usable) bytes of the file system holding `dir`.
fn space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a zeroed struct of the right type; path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as i64;
    Some((st.f_blocks as i64 * block, st.f_bavail as i64 * block))
}
