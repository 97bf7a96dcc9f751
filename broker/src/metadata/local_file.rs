//! The local-file metadata store: the whole image as JSON in `corebus-metadata.json` in the
//! data directory, replaced atomically (write a temporary file, fsync it, rename it over the
//! old one, fsync the directory) so a crash leaves either the old or the new image, never a
//! torn one.
//!
//! Never: writes on a reactor thread (the file work runs on glommio's blocking pool); lets two
//! changes interleave (a semaphore of one orders them).

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::image::IMAGE_FORMAT_VERSION;
use super::{MetadataCommand, MetadataError, MetadataImage, MetadataStore};

/// The file name inside the data directory.
pub const METADATA_FILE_NAME: &str = "corebus-metadata.json";

pub struct LocalFileStore {
    path: PathBuf,
    image: RefCell<Arc<MetadataImage>>,
    writer: glommio::sync::Semaphore,
}

impl LocalFileStore {
    /// Reads the image from `data_dir`, or creates and persists a new cluster's image when
    /// there is none. Runs before the executors start (plain blocking I/O).
    pub fn load_or_init(data_dir: &Path) -> Result<MetadataImage, MetadataError> {
        if let Some(img) = Self::read_existing(data_dir)? {
            return Ok(img);
        }
        let img = MetadataImage::new_cluster();
        write_atomically(&data_dir.join(METADATA_FILE_NAME), &encode(&img)?)?;
        Ok(img)
    }

    /// The image in `data_dir`'s metadata file, `None` when there is no file.
    pub fn read_existing(data_dir: &Path) -> Result<Option<MetadataImage>, MetadataError> {
        let path = data_dir.join(METADATA_FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let mut img: MetadataImage =
            serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if img.format_version > IMAGE_FORMAT_VERSION {
            return Err(MetadataError::Corrupt {
                path,
                reason: format!(
                    "format version {} is newer than this corebus ({})",
                    img.format_version, IMAGE_FORMAT_VERSION
                ),
            });
        }
        // An older file is upgraded in memory (its partitions read as unassigned, adopted by
        // `metadata::open`) and written in the current format by the next change.
        img.format_version = IMAGE_FORMAT_VERSION;
        img.reindex();
        Ok(Some(img))
    }

    /// A store over an image loaded by `load_or_init`; must be built on the executor that
    /// will use it.
    pub fn new(data_dir: &Path, image: MetadataImage) -> LocalFileStore {
        LocalFileStore {
            path: data_dir.join(METADATA_FILE_NAME),
            image: RefCell::new(Arc::new(image)),
            writer: glommio::sync::Semaphore::new(1),
        }
    }

    /// Applies commands synchronously; for start-up fixes before the executors run.
    pub fn apply_blocking(
        data_dir: &Path,
        image: &mut MetadataImage,
        cmds: Vec<MetadataCommand>,
    ) -> Result<(), MetadataError> {
        let mut next = image.clone();
        for c in cmds {
            next.apply(c)?;
        }
        next.epoch += 1;
        write_atomically(&data_dir.join(METADATA_FILE_NAME), &encode(&next)?)?;
        *image = next;
        Ok(())
    }
}

impl MetadataStore for LocalFileStore {
    fn current(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    async fn apply(&self, cmds: Vec<MetadataCommand>) -> Result<Arc<MetadataImage>, MetadataError> {
        let _turn = self
            .writer
            .acquire_permit(1)
            .await
            .map_err(|e| MetadataError::Invalid(format!("metadata writer closed: {e}")))?;
        let mut next = (*self.current()).clone();
        for c in cmds {
            next.apply(c)?;
        }
        next.epoch += 1;
        let bytes = encode(&next)?;
        let path = self.path.clone();
        glommio::executor()
            .spawn_blocking(move || write_atomically(&path, &bytes))
            .await?;
        let next = Arc::new(next);
        *self.image.borrow_mut() = next.clone();
        Ok(next)
    }
}

fn encode(img: &MetadataImage) -> Result<Vec<u8>, MetadataError> {
    serde_json::to_vec_pretty(img).map_err(|e| MetadataError::Invalid(e.to_string()))
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    let io = |source| MetadataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    // The rename is durable only once the directory entry is.
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{PartitionMeta, TopicId, TopicMeta};

    #[test]
    fn a_format_1_file_reads_with_unassigned_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let id = TopicId::random();
        // What the previous release wrote (format 1: a shard index per partition).
        let old = format!(
            r#"{{"format_version":1,"cluster_id":"abc","epoch":4,"topics":{{"t":{{"name":"t","id":"{}","partitions":[{{"shard":0}},{{"shard":1}}],"configs":{{}}}}}},"next_producer_id":2000}}"#,
            id.0
        );
        fs::write(dir.path().join(METADATA_FILE_NAME), old).unwrap();
        let mut img = LocalFileStore::load_or_init(dir.path()).unwrap();
        assert_eq!(img.format_version, IMAGE_FORMAT_VERSION);
        assert_eq!(img.unassigned(), vec![(id, 0), (id, 1)]);
        let adopt = img.adopt_unassigned(3);
        LocalFileStore::apply_blocking(dir.path(), &mut img, adopt).unwrap();
        let again = LocalFileStore::load_or_init(dir.path()).unwrap();
        assert_eq!(again.cluster_id, "abc");
        assert_eq!(again.next_producer_id, 2000);
        assert_eq!(
            again.topic("t").unwrap().partitions,
            vec![PartitionMeta::led_by(3); 2]
        );
        let text = fs::read_to_string(dir.path().join(METADATA_FILE_NAME)).unwrap();
        assert!(text.contains(r#""format_version": 2"#), "{text}");
        assert!(!text.contains("shard"), "{text}");
    }

    #[test]
    fn survives_reload_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = LocalFileStore::load_or_init(dir.path()).unwrap();
        let cluster = img.cluster_id.clone();
        let id = TopicId::random();
        LocalFileStore::apply_blocking(
            dir.path(),
            &mut img,
            vec![
                MetadataCommand::CreateTopic(TopicMeta {
                    name: "t".into(),
                    id,
                    partitions: vec![PartitionMeta::led_by(0)],
                    configs: Default::default(),
                }),
                MetadataCommand::AllocateProducerIds { count: 10 },
            ],
        )
        .unwrap();
        let again = LocalFileStore::load_or_init(dir.path()).unwrap();
        assert_eq!(again.cluster_id, cluster);
        assert_eq!(again.topic_by_id(id).map(|t| t.name.as_str()), Some("t"));
        assert_eq!(again.next_producer_id, img.next_producer_id);
        // A failed change leaves the file as it was.
        assert!(
            LocalFileStore::apply_blocking(
                dir.path(),
                &mut img,
                vec![MetadataCommand::DeleteTopic {
                    id: TopicId::random()
                }]
            )
            .is_err()
        );
        assert_eq!(
            LocalFileStore::load_or_init(dir.path()).unwrap().epoch,
            img.epoch
        );
        fs::write(dir.path().join(METADATA_FILE_NAME), b"{ torn").unwrap();
        assert!(matches!(
            LocalFileStore::load_or_init(dir.path()),
            Err(MetadataError::Corrupt { .. })
        ));
    }

    #[test]
    fn apply_on_an_executor_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let img = LocalFileStore::load_or_init(&path).unwrap();
        let p2 = path.clone();
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let store = LocalFileStore::new(&p2, img);
                store
                    .apply(vec![MetadataCommand::AllocateProducerIds { count: 5 }])
                    .await
                    .unwrap();
                store.current().next_producer_id
            })
            .unwrap()
            .join()
            .map(|next| {
                assert_eq!(
                    LocalFileStore::load_or_init(&path)
                        .unwrap()
                        .next_producer_id,
                    next
                )
            })
            .unwrap();
    }
}
