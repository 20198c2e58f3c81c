//! The connection to a NATS JetStream cluster, and creating or opening partitions on it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Info;
use async_nats::jetstream::{self, Context};

use crate::ack::{self, AckGuarantee};
use crate::api::{self, STREAM_NAME_EXIST, STREAM_NOT_FOUND};
use crate::error::{JetStreamError, Result};
use crate::limits;
use crate::naming::PartitionRef;
use crate::partition::JetStreamPartition;
use crate::resend::Resends;
use crate::settings::{self, PartitionSettings};
use crate::tls::ClientTls;

/// How to connect. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// NATS server URLs (`nats://host:port`); the client fails over between them and the
    /// servers the cluster advertises.
    pub urls: Vec<String>,
    /// Deadline of one JetStream API request or publish acknowledgment, in ms. Default
    /// [`limits::REQUEST_TIMEOUT_MS_DEFAULT`].
    pub request_timeout_ms: u64,
    /// The connection's name as servers show it. Default `logbook`.
    pub client_name: String,
    /// TLS to the servers (required on every connection when given, whatever the URL's
    /// scheme). Default `None`: as the URLs say (`tls://` with the system's roots).
    pub tls: Option<ClientTls>,
}

impl ConnectSettings {
    /// Settings for `urls` with the defaults.
    pub fn new(urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ConnectSettings {
            urls: urls.into_iter().map(Into::into).collect(),
            request_timeout_ms: limits::REQUEST_TIMEOUT_MS_DEFAULT,
            client_name: "logbook".into(),
            tls: None,
        }
    }
}

/// A connection to a JetStream cluster holding Logbook partitions. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLog {
    client: async_nats::Client,
    js: Context,
    /// Wakes appends whose acknowledgment will not come ([`crate::resend`]).
    resends: Arc<Resends>,
    /// The deadline of one API request or acknowledgment.
    request_timeout: Duration,
    /// Counts the connection's (re-)establishments after the first.
    reconnects: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("server", &self.client.server_info().server_name)
            .finish()
    }
}

impl JetStreamLog {
    /// Connects to the first reachable server of `settings.urls`; later the client reconnects
    /// by itself (to any server of the cluster) for as long as it lives. Starts a task (on
    /// the calling runtime) that follows the streams' leader elections, so an append waiting
    /// for a dead leader's acknowledgment is sent again as soon as a new leader is elected
    /// (the crate's `resend` module).
    ///
    /// # Errors
    /// [`JetStreamError::InvalidArgument`] for no URLs, a zero timeout or a TLS file that
    /// cannot be read, [`JetStreamError::Connect`] naming the URLs when none accepts (a
    /// TLS handshake that fails included).
    pub async fn connect(settings: &ConnectSettings) -> Result<JetStreamLog> {
        if settings.urls.is_empty() {
            return Err(JetStreamError::InvalidArgument {
                field: "urls",
                why: "no NATS server URL given".into(),
            });
        }
        if settings.request_timeout_ms == 0 {
            return Err(JetStreamError::InvalidArgument {
                field: "request_timeout_ms",
                why: "must be > 0".into(),
            });
        }
        let timeout = Duration::from_millis(settings.request_timeout_ms);
        let resends = Arc::new(Resends::default());
        let on_event = resends.clone();
        let (reconnected, reconnects) = tokio::sync::watch::channel(0u64);
        let mut options = async_nats::ConnectOptions::new();
        if let Some(tls) = &settings.tls {
            // async-nats reads the files itself; reading them first names the one missing.
            tls.read()
                .map_err(|(field, why)| JetStreamError::InvalidArgument { field, why })?;
            options = options
                .require_tls(true)
                .add_root_certificates(tls.ca_cert.clone());
            if let Some((cert, key)) = &tls.identity {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let client = options
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    on_event.reconnected();
                    reconnected.send_modify(|n| *n += 1);
                }
                async {}
            })
            .name(&settings.client_name)
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .max_reconnects(None)
            .connect(settings.urls.as_slice())
            .await
            .map_err(|e| JetStreamError::Connect {
                urls: settings.urls.join(","),
                detail: e.to_string(),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client.clone());
        tokio::spawn(resends.clone().follow_advisories(client.clone()));
        Ok(JetStreamLog {
            client,
            js,
            resends,
            request_timeout: timeout,
            reconnects,
        })
    }

    /// Changes each time the connection is re-established (to any server): what was read of
    /// the servers before may be stale ([`crate::ack::Durability::follow`]).
    pub fn reconnects(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnects.clone()
    }

    /// The `max_payload` of the server this connection is on, in bytes: the largest batch
    /// (with headers) an append can carry.
    pub fn max_payload_bytes(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// The NATS connection (for core subscriptions, e.g. the catalog's wake-ups).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The version of the server this connection is on, e.g. `2.9.10`.
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// Creates the JetStream stream of `partition` with `settings`, or opens it when it already
    /// exists with exactly these settings (creating is idempotent).
    ///
    /// # Errors
    /// [`JetStreamError::StreamSettingsDiffer`] when a stream of that name exists with other
    /// settings (it is not reused); [`JetStreamError::InvalidArgument`] for bad settings;
    /// [`JetStreamError::Unavailable`] (retryable) when the cluster is not ready — e.g. fewer
    /// servers up than `replicas`; [`JetStreamError::Api`] otherwise.
    pub async fn create_partition(
        &self,
        partition: &PartitionRef,
        settings: &PartitionSettings,
    ) -> Result<JetStreamPartition> {
        settings.validate()?;
        let config = settings.stream_config(partition);
        let name = config.name.clone();
        match self.stream_info(&name).await {
            Ok(info) => {
                settings::check_same(&config, &info.config)?;
                return Ok(self.partition_handle(partition, &info));
            }
            Err(failure) if failure.code() == Some(STREAM_NOT_FOUND) => {}
            Err(failure) => return Err(api::classify(&name, failure, false)),
        }
        let created: Result<Info, _> =
            api::request(&self.js, format!("STREAM.CREATE.{name}"), &config).await;
        match created {
            Ok(info) => Ok(self.partition_handle(partition, &info)),
            // Created concurrently by another node: report how it differs, if it does.
            Err(failure) if failure.code() == Some(STREAM_NAME_EXIST) => {
                let info = self
                    .stream_info(&name)
                    .await
                    .map_err(|f| api::classify(&name, f, true))?;
                settings::check_same(&config, &info.config)?;
                Ok(self.partition_handle(partition, &info))
            }
            Err(failure) => Err(api::classify(&name, failure, false)),
        }
    }

    /// Opens the existing JetStream stream of `partition`, checking it belongs to it.
    ///
    /// # Errors
    /// [`JetStreamError::StreamNotFound`]; [`JetStreamError::StreamSettingsDiffer`] when the
    /// stream's description names another partition (a hash collision) or its subjects differ;
    /// [`JetStreamError::Unavailable`] (retryable).
    pub async fn open_partition(&self, partition: &PartitionRef) -> Result<JetStreamPartition> {
        let name = partition.jetstream_name();
        let info = match self.stream_info(&name).await {
            Ok(info) => info,
            Err(failure) if failure.code() == Some(STREAM_NOT_FOUND) => {
                return Err(JetStreamError::StreamNotFound {
                    stream: name,
                    partition: partition.to_string(),
                });
            }
            Err(failure) => return Err(api::classify(&name, failure, false)),
        };
        // Replicas and the duplicate window are whatever the creator chose; the identity and
        // the append-only settings must be ours.
        let mut expected = PartitionSettings::default().stream_config(partition);
        expected.num_replicas = info.config.num_replicas;
        expected.duplicate_window = info.config.duplicate_window;
        settings::check_same(&expected, &info.config)?;
        Ok(self.partition_handle(partition, &info))
    }

    /// Deletes the JetStream stream of `partition` and every message in it (a Logbook stream
    /// drop; the next incarnation gets a new name).
    ///
    /// # Errors
    /// [`JetStreamError::StreamNotFound`], [`JetStreamError::Unavailable`] (retryable),
    /// [`JetStreamError::Api`].
    pub async fn delete_partition(&self, partition: &PartitionRef) -> Result<()> {
        let name = partition.jetstream_name();
        // The delete API refuses a `null` body: an empty object it is.
        let empty = serde_json::json!({});
        let deleted: Result<serde_json::Value, _> =
            api::request(&self.js, format!("STREAM.DELETE.{name}"), &empty).await;
        match deleted {
            Ok(_) => Ok(()),
            Err(failure) if failure.code() == Some(STREAM_NOT_FOUND) => {
                Err(JetStreamError::StreamNotFound {
                    stream: name,
                    partition: partition.to_string(),
                })
            }
            Err(failure) => Err(api::classify(&name, failure, false)),
        }
    }

    /// What an acknowledgment of a stream with `replicas` replicas guarantees on this cluster,
    /// read from the monitoring URLs (`http://host:port`) of all its servers. With no URL,
    /// only the connected server's version is known: ≥ 2.10 cannot be confirmed fsynced then,
    /// so the answer is not fsynced.
    ///
    /// # Errors
    /// [`JetStreamError::Monitor`] when a given monitoring URL cannot be read — an unreadable
    /// server is not assumed to be configured like the others.
    pub async fn ack_guarantee(
        &self,
        replicas: u32,
        monitor_urls: &[String],
    ) -> Result<AckGuarantee> {
        let timeout = Duration::from_millis(limits::REQUEST_TIMEOUT_MS_DEFAULT);
        let mut servers = Vec::with_capacity(monitor_urls.len());
        for url in monitor_urls {
            servers.push(ack::probe(url, timeout).await?);
        }
        Ok(ack::guarantee(replicas, &servers))
    }

    async fn stream_info(&self, name: &str) -> Result<Info, api::ApiFailure> {
        api::request(&self.js, format!("STREAM.INFO.{name}"), &()).await
    }

    fn partition_handle(&self, partition: &PartitionRef, info: &Info) -> JetStreamPartition {
        JetStreamPartition::new(
            self.client.clone(),
            self.js.clone(),
            partition.clone(),
            info.config.num_replicas as u32,
            self.resends.register(&info.config.name),
            self.request_timeout,
        )
    }
}
