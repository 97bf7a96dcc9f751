//! The cluster as one client sees it: brokers, partition leaders, a connection per broker.
//!
//! Owns: the bootstrap connection, Metadata (with the brokers' advertised addresses and each
//! partition's leader), lazily opened connections to leaders (reopened once dead), and
//! CreateTopics for the workload's topics.
//! Never: follows a leader change by itself (a benchmark reports the errors; the caller
//! refreshes metadata if it wants to).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corebus_wire::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use corebus_wire::kafka_protocol::messages::{
    CreateTopicsRequest, MetadataRequest, RequestKind, ResponseKind, TopicName,
};
use corebus_wire::kafka_protocol::protocol::StrBytes;
use corebus_wire::request::creatable_topic;

use super::connection::Connection;
use super::error::ClientError;

/// Kafka's TOPIC_ALREADY_EXISTS: a topic of that name is there, which is what we wanted.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long CreateTopics may take on the broker, in milliseconds.
const CREATE_TOPICS_TIMEOUT_MS: i32 = 30_000;
/// How long new topics may take until every partition has a leader, in milliseconds.
const LEADERS_TIMEOUT_MS: u64 = 30_000;
/// Pause between Metadata polls while waiting for leaders, in milliseconds.
const LEADERS_POLL_MS: u64 = 100;

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// One topic's partitions and their leaders (broker node ids, -1 while leaderless).
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub name: String,
    pub leaders: Vec<i32>,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

pub struct Cluster {
    bootstrap: Rc<Connection>,
    max_in_flight: usize,
    brokers: RefCell<HashMap<i32, String>>,
    /// The controller named by the last Metadata answer (-1: none known).
    controller: std::cell::Cell<i32>,
    connections: RefCell<HashMap<i32, Rc<Connection>>>,
}

impl Cluster {
    pub async fn connect(bootstrap: &str, max_in_flight: usize) -> Result<Cluster, ClientError> {
        let connection = Rc::new(Connection::connect(bootstrap, max_in_flight).await?);
        Ok(Cluster {
            bootstrap: connection,
            max_in_flight,
            brokers: RefCell::new(HashMap::new()),
            controller: std::cell::Cell::new(-1),
            connections: RefCell::new(HashMap::new()),
        })
    }

    /// Brokers named by the last Metadata answer.
    pub fn broker_count(&self) -> usize {
        self.brokers.borrow().len()
    }

    /// Metadata for `topics` (without auto-creation); refreshes the broker table.
    pub async fn metadata(&self, topics: &[String]) -> Result<Vec<TopicLayout>, ClientError> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let ResponseKind::Metadata(response) =
            self.bootstrap.call(RequestKind::Metadata(request)).await?
        else {
            return Err(ClientError::Metadata("not a Metadata answer".to_owned()));
        };
        self.controller.set(response.controller_id.0);
        {
            let mut brokers = self.brokers.borrow_mut();
            for broker in &response.brokers {
                brokers.insert(broker.node_id.0, format!("{}:{}", broker.host, broker.port));
            }
        }
        let mut layouts = Vec::with_capacity(topics.len());
        for wanted in topics {
            let topic = response
                .topics
                .iter()
                .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == wanted))
                .ok_or_else(|| ClientError::Metadata(format!("topic {wanted} not in answer")))?;
            if topic.error_code != 0 {
                return Err(ClientError::Kafka {
                    what: format!("Metadata for {wanted}"),
                    code: topic.error_code,
                });
            }
            let mut leaders = vec![-1; topic.partitions.len()];
            for p in &topic.partitions {
                let index = usize::try_from(p.partition_index)
                    .ok()
                    .filter(|&i| i < leaders.len())
                    .ok_or_else(|| {
                        ClientError::Metadata(format!(
                            "{wanted}: partition {} of {}",
                            p.partition_index,
                            leaders.len()
                        ))
                    })?;
                leaders[index] = if p.error_code == 0 { p.leader_id.0 } else { -1 };
            }
            layouts.push(TopicLayout {
                name: wanted.clone(),
                leaders,
            });
        }
        Ok(layouts)
    }

    /// Creates `topics` (an existing one is accepted as it is) and waits until every
    /// partition has a leader. The request goes to the controller Metadata names, as
    /// librdkafka and the Java admin client send it (a broker that is not the controller
    /// answers NOT_CONTROLLER), else to the bootstrap broker.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
    ) -> Result<Vec<TopicLayout>, ClientError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(CREATE_TOPICS_TIMEOUT_MS)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        let configs = t.configs.iter().map(|(k, v)| (k, v));
                        creatable_topic(&t.name, t.partitions, t.replication_factor, configs)
                    })
                    .collect(),
            );
        self.metadata(&[]).await?;
        let controller = self.controller.get();
        let to = if controller >= 0 {
            self.connection(controller).await?
        } else {
            self.bootstrap.clone()
        };
        let ResponseKind::CreateTopics(response) =
            to.call(RequestKind::CreateTopics(request)).await?
        else {
            return Err(ClientError::Metadata(
                "not a CreateTopics answer".to_owned(),
            ));
        };
        for result in &response.topics {
            if result.error_code != 0 && result.error_code != TOPIC_ALREADY_EXISTS {
                return Err(ClientError::Kafka {
                    what: format!(
                        "CreateTopics {}: {}",
                        result.name.0,
                        result.error_message.as_deref().unwrap_or("")
                    ),
                    code: result.error_code,
                });
            }
        }
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let deadline = Instant::now() + Duration::from_millis(LEADERS_TIMEOUT_MS);
        loop {
            let last = match self.metadata(&names).await {
                Ok(layouts) if layouts.iter().all(|l| l.leaders.iter().all(|&x| x >= 0)) => {
                    return Ok(layouts);
                }
                Ok(_) => ClientError::Metadata("partitions without a leader".to_owned()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            glommio::timer::sleep(Duration::from_millis(LEADERS_POLL_MS)).await;
        }
    }

    /// The connection to broker `node`, opened on first use and reopened after a failure.
    pub async fn connection(&self, node: i32) -> Result<Rc<Connection>, ClientError> {
        if let Some(c) = self
            .connections
            .borrow()
            .get(&node)
            .filter(|c| !c.is_dead())
        {
            return Ok(c.clone());
        }
        let address = self
            .brokers
            .borrow()
            .get(&node)
            .cloned()
            .ok_or_else(|| ClientError::Metadata(format!("no address for broker {node}")))?;
        let connection = Rc::new(Connection::connect(&address, self.max_in_flight).await?);
        self.connections
            .borrow_mut()
            .insert(node, connection.clone());
        Ok(connection)
    }
}
