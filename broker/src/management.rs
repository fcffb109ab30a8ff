//! The RabbitMQ management HTTP API: queue statistics of a whole vhost in one request, the
//! bindings and queues LogStream reconciles, and the vhost/user calls tests and `dev` need.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::endpoint::ManagementEndpoint;

mod model;

use model::ConsumerInfo;
pub use model::{BindingInfo, ExchangeInfo, MessageStats, QueueStats, Rate};

/// Timeout of one management API request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue columns [`ManagementClient::queues`] asks for: everything the status and the
/// topology reconcile read, and nothing else (the full listing is large).
const QUEUE_COLUMNS: &str = "name,type,arguments,messages,messages_ready,messages_unacknowledged,messages_dlx,consumers,head_message_timestamp,message_stats.publish,message_stats.deliver_get,message_stats.publish_details.rate,message_stats.ack_details.rate,message_stats.deliver_get_details.rate";

/// The columns of [`ManagementClient::queue_stats`]: what the autoscaler reads, including the
/// cumulative publish and delivery counters its age tracking needs. Without the declaration
/// arguments a vhost's listing parses into a third of the memory.
const STATS_COLUMNS: &str = "name,type,messages,messages_ready,messages_unacknowledged,consumers,head_message_timestamp,message_stats.publish,message_stats.deliver_get,message_stats.publish_details.rate,message_stats.ack_details.rate,message_stats.deliver_get_details.rate";

/// Queues per page of [`ManagementClient::queues_with_prefix`] (the API's largest page).
const PAGE_SIZE: usize = 500;

/// One page of a filtered listing.
#[derive(Debug, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    page_count: usize,
    /// Items on all pages.
    #[serde(default)]
    filtered_count: usize,
}

/// `prefix` as a regular expression matching names that start with it (PCRE, as the
/// management API's `use_regex` takes it).
fn prefix_regex(prefix: &str) -> String {
    let mut regex = String::from("^");
    for c in prefix.chars() {
        if !c.is_ascii_alphanumeric() {
            regex.push('\\');
        }
        regex.push(c);
    }
    regex
}

/// A regular expression matching exactly `name` (for permissions, which RabbitMQ matches as
/// regular expressions).
pub fn exact_regex(name: &str) -> String {
    format!("{}$", prefix_regex(name))
}

/// A regular expression matching exactly one of `names`.
fn any_of_regex<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let alternatives: Vec<String> = names
        .into_iter()
        .map(|name| prefix_regex(name)[1..].to_owned())
        .collect();
    format!("^(?:{})$", alternatives.join("|"))
}

/// The name column of a listing.
#[derive(Debug, Deserialize)]
struct Named {
    name: String,
}

/// A user's permissions on one vhost: three regular expressions over resource names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Declare and delete queues and exchanges.
    pub configure: String,
    /// Publish to exchanges, bind queues to and from.
    pub write: String,
    /// Consume from queues, get, purge; bind from exchanges.
    pub read: String,
}

/// Why a management API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// No answer (refused, timed out, DNS).
    #[error("management API at {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL called (no credentials in it).
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The broker refused the credentials.
    #[error("management API at {url} refused the credentials of user {user:?} (HTTP {status})")]
    Unauthorized {
        /// The URL called.
        url: String,
        /// The user name (never the password).
        user: String,
        /// 401 or 403.
        status: u16,
    },
    /// The object does not exist.
    #[error("management API at {url}: not found")]
    NotFound {
        /// The URL called.
        url: String,
    },
    /// Any other error status.
    #[error("management API at {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// An answer that does not decode.
    #[error("management API at {url} sent an answer that does not decode: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// The decoder's message.
        reason: String,
    },
}

/// A client of one broker's management API. With several base URLs (a cluster's nodes), a
/// request that finds no answer is tried on the next node, and later requests start from the
/// node that last answered.
#[derive(Clone)]
pub struct ManagementClient {
    http: reqwest::Client,
    endpoint: ManagementEndpoint,
    /// Index (in [`ManagementEndpoint::bases`]) of the node that answered last.
    current: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ManagementClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManagementClient({:?})", self.endpoint)
    }
}

fn segment(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl ManagementClient {
    /// A client for `endpoint`, over `https` with its TLS material (the CA it trusts, the
    /// client certificate it shows) when a base URL is `https`.
    pub fn new(endpoint: ManagementEndpoint) -> Self {
        let builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5));
        // The material was checked when it was read, so this does not fail in practice; if it
        // did, a client without it still checks certificates against the system's CAs.
        let http = endpoint
            .tls
            .apply_to(builder)
            .and_then(reqwest::ClientBuilder::build)
            .unwrap_or_else(|e| {
                tracing::warn!("management API client without the given TLS material: {e}");
                reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default()
            });
        Self {
            http,
            endpoint,
            current: Arc::default(),
        }
    }

    /// The base URL requests start from: the node that answered last.
    fn base(&self) -> &url::Url {
        let bases = 1 + self.endpoint.others.len();
        let index = self.current.load(Ordering::Relaxed) % bases;
        self.endpoint
            .bases()
            .nth(index)
            .unwrap_or(&self.endpoint.base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}api/{path}", self.base())
    }

    /// The URL as errors show it: without the query string (the column list is noise).
    fn shown(&self, path: &str) -> String {
        self.url(path.split('?').next().unwrap_or(path))
    }

    /// Sends the request to the node that answered last, then to each other node in turn
    /// while none answers.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ManagementError> {
        let bases = 1 + self.endpoint.others.len();
        let first = self.current.load(Ordering::Relaxed) % bases;
        let mut failures = Vec::new();
        for step in 0..bases {
            let index = (first + step) % bases;
            self.current.store(index, Ordering::Relaxed);
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .basic_auth(&self.endpoint.username, Some(&self.endpoint.password));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(e) => failures.push((self.base().to_string(), reqwest_reason(&e))),
            }
        }
        self.current.store(first, Ordering::Relaxed);
        let reason = match failures.as_slice() {
            [(_, only)] => only.clone(),
            all => {
                let each: Vec<String> =
                    all.iter().map(|(base, r)| format!("{base}: {r}")).collect();
                format!("tried {bases} nodes in turn: {}", each.join("; "))
            }
        };
        Err(ManagementError::Unreachable {
            url: self.shown(path),
            reason,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>, ManagementError> {
        let response = self.send(method, path, body.as_ref()).await?;
        let url = self.shown(path);
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ManagementError::Unreachable {
                url: url.clone(),
                reason: reqwest_reason(&e),
            })?;
        match status {
            // Without a copy when the body is one buffer.
            s if s.is_success() => Ok(bytes.into()),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(ManagementError::Unauthorized {
                    url,
                    user: self.endpoint.username.clone(),
                    status: status.as_u16(),
                })
            }
            StatusCode::NOT_FOUND => Err(ManagementError::NotFound { url }),
            _ => Err(ManagementError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ManagementError> {
        let bytes = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ManagementError::Decode {
            url: self.shown(path),
            reason: e.to_string(),
        })
    }

    /// Every queue of `vhost` with depth, consumers, rates and head timestamp: one request.
    pub async fn queues(&self, vhost: &str) -> Result<Vec<QueueStats>, ManagementError> {
        self.get(&format!(
            "queues/{}?columns={QUEUE_COLUMNS}",
            segment(vhost)
        ))
        .await
    }

    /// The queues of `vhost` whose names start with `prefix` (one pipeline's), with the same
    /// columns as [`queues`](Self::queues): the broker filters, so a reconcile reads its own
    /// few queues and not every queue of a shared vhost. The broker's name filter ignores
    /// case, so what it lists is checked against `prefix` exactly here.
    pub async fn queues_with_prefix(
        &self,
        vhost: &str,
        prefix: &str,
    ) -> Result<Vec<QueueStats>, ManagementError> {
        let name = segment(&prefix_regex(prefix));
        let (queues, _) = self
            .all_pages::<QueueStats>(&format!(
                "queues/{}?name={name}&use_regex=true&columns={QUEUE_COLUMNS}",
                segment(vhost)
            ))
            .await?;
        Ok(queues
            .into_iter()
            .filter(|q| q.name.starts_with(prefix))
            .collect())
    }

    /// Every page of the listing at `path` (which has a query, without paging), in pages of
    /// [`PAGE_SIZE`]: the items and the number of pages it took.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(Vec<T>, usize), ManagementError> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let listed: Page<T> = self
                .get(&format!("{path}&page={page}&page_size={PAGE_SIZE}"))
                .await?;
            if page == 1 {
                // As many as there are (a vhost's 10,000 queues: not 16,384 by doubling).
                items.reserve_exact(listed.filtered_count.max(listed.items.len()));
            }
            items.extend(listed.items);
            if page >= listed.page_count {
                return Ok((items, page));
            }
            page += 1;
        }
    }

    /// Every queue of `vhost` with only its name and message count (the other figures
    /// `None`), in pages of 500: what a first apply needs to know of a whole shared vhost.
    pub async fn queue_names(&self, vhost: &str) -> Result<Vec<QueueStats>, ManagementError> {
        self.all_pages(&format!("queues/{}?columns=name,messages", segment(vhost)))
            .await
            .map(|(queues, _)| queues)
    }

    /// The names of every exchange of `vhost`, in pages of 500.
    pub async fn exchange_names(&self, vhost: &str) -> Result<BTreeSet<String>, ManagementError> {
        let (exchanges, _) = self
            .all_pages::<Named>(&format!("exchanges/{}?columns=name", segment(vhost)))
            .await?;
        Ok(exchanges.into_iter().map(|e| e.name).collect())
    }

    /// Every queue of `vhost` with what the autoscaler reads (no declaration arguments), in
    /// pages of 500 (the API's largest): one request per 500 queues however many pipelines
    /// share the vhost. Returns the queues and the number of pages it took.
    pub async fn queue_stats_paged(
        &self,
        vhost: &str,
    ) -> Result<(Vec<QueueStats>, usize), ManagementError> {
        self.all_pages(&format!(
            "queues/{}?columns={STATS_COLUMNS}",
            segment(vhost)
        ))
        .await
    }

    /// [`queue_stats_paged`](Self::queue_stats_paged) without the page count.
    pub async fn queue_stats(&self, vhost: &str) -> Result<Vec<QueueStats>, ManagementError> {
        self.queue_stats_paged(vhost)
            .await
            .map(|(queues, _)| queues)
    }

    /// How many consumers take deliveries from each queue of `vhost` that has any: one
    /// request for the vhost's consumer listing. A consumer leaves the listing when it is
    /// cancelled, also where the queue still counts it (a quorum queue, while the consumer's
    /// channel holds deliveries).
    async fn consuming(&self, vhost: &str) -> Result<HashMap<String, u64>, ManagementError> {
        let consumers: Vec<ConsumerInfo> = self
            .get(&format!("consumers/{}?columns=queue.name", segment(vhost)))
            .await?;
        let mut per_queue = HashMap::new();
        for c in consumers {
            *per_queue.entry(c.queue.name).or_default() += 1;
        }
        Ok(per_queue)
    }

    /// Fills in [`QueueStats::consuming`] for the queues of `queues` (all of `vhost`) that
    /// [may count paused workers](QueueStats::may_count_paused_workers), from one consumer
    /// listing; asks nothing when none may (no quorum queue, or none with consumers). A
    /// worker whose sink is down cancels its consumer and holds its deliveries: a quorum queue
    /// still counts it, the listing does not.
    pub async fn read_consuming(
        &self,
        vhost: &str,
        queues: &mut [QueueStats],
    ) -> Result<(), ManagementError> {
        if !queues.iter().any(QueueStats::may_count_paused_workers) {
            return Ok(());
        }
        let consuming = self.consuming(vhost).await?;
        for q in queues.iter_mut().filter(|q| q.may_count_paused_workers()) {
            q.consuming = Some(consuming.get(&q.name).copied().unwrap_or(0));
        }
        Ok(())
    }

    /// The bindings of queue `queue` of `vhost` (its default-exchange binding included).
    pub async fn queue_bindings(
        &self,
        vhost: &str,
        queue: &str,
    ) -> Result<Vec<BindingInfo>, ManagementError> {
        self.get(&format!(
            "queues/{}/{}/bindings",
            segment(vhost),
            segment(queue)
        ))
        .await
    }

    /// Every binding of `vhost`.
    pub async fn bindings(&self, vhost: &str) -> Result<Vec<BindingInfo>, ManagementError> {
        self.get(&format!("bindings/{}", segment(vhost))).await
    }

    /// Every exchange of `vhost`.
    pub async fn exchanges(&self, vhost: &str) -> Result<Vec<ExchangeInfo>, ManagementError> {
        self.get(&format!(
            "exchanges/{}?columns=name,type,durable",
            segment(vhost)
        ))
        .await
    }

    /// Which of `names` are exchanges of `vhost`: one request (the broker filters by name),
    /// where a passive declare per missing exchange would cost a channel. The broker's name
    /// filter ignores case, so what it lists is checked against `names` exactly here.
    pub async fn existing_exchanges(
        &self,
        vhost: &str,
        names: &[&str],
    ) -> Result<BTreeSet<String>, ManagementError> {
        let regex = segment(&any_of_regex(names.iter().copied()));
        let (listed, _) = self
            .all_pages::<Named>(&format!(
                "exchanges/{}?name={regex}&use_regex=true&columns=name",
                segment(vhost)
            ))
            .await?;
        Ok(listed
            .into_iter()
            .map(|e| e.name)
            .filter(|name| names.contains(&name.as_str()))
            .collect())
    }

    /// The broker's RabbitMQ version; a cheap reachability and credentials check.
    pub async fn rabbitmq_version(&self) -> Result<String, ManagementError> {
        let overview: Value = self.get("overview?columns=rabbitmq_version").await?;
        Ok(overview["rabbitmq_version"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned())
    }

    /// Creates `vhost` (idempotent).
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        self.call(
            Method::PUT,
            &format!("vhosts/{}", segment(vhost)),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Deletes `vhost` with everything in it; a missing vhost is not an error.
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        match self
            .call(Method::DELETE, &format!("vhosts/{}", segment(vhost)), None)
            .await
        {
            Ok(_) | Err(ManagementError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates or updates user `name` with `password` and `tags` (e.g. `management`).
    pub async fn put_user(
        &self,
        name: &str,
        password: &str,
        tags: &str,
    ) -> Result<(), ManagementError> {
        self.call(
            Method::PUT,
            &format!("users/{}", segment(name)),
            Some(json!({"password": password, "tags": tags})),
        )
        .await
        .map(drop)
    }

    /// Deletes user `name`; a missing user is not an error.
    pub async fn delete_user(&self, name: &str) -> Result<(), ManagementError> {
        match self
            .call(Method::DELETE, &format!("users/{}", segment(name)), None)
            .await
        {
            Ok(_) | Err(ManagementError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets `user`'s permissions on `vhost` (replacing what it had there).
    pub async fn put_permissions(
        &self,
        vhost: &str,
        user: &str,
        permissions: &Permissions,
    ) -> Result<(), ManagementError> {
        self.call(
            Method::PUT,
            &format!("permissions/{}/{}", segment(vhost), segment(user)),
            Some(json!({
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            })),
        )
        .await
        .map(drop)
    }

    /// Grants `user` full configure/write/read permissions on `vhost`.
    pub async fn grant_all(&self, vhost: &str, user: &str) -> Result<(), ManagementError> {
        self.call(
            Method::PUT,
            &format!("permissions/{}/{}", segment(vhost), segment(user)),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await
        .map(drop)
    }
}

/// The HTTP client's error with its causes, which name the real problem ("Connection
/// refused"), but without the URL, which the caller already reports.
fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut reason = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    crate::error::tls_failure(&reason).unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_of_regex_matches_exactly_the_names_with_their_dots_escaped() {
        assert_eq!(
            any_of_regex(["logstream.ns.app", "logstream.ns.app.dlx"]),
            "^(?:logstream\\.ns\\.app|logstream\\.ns\\.app\\.dlx)$"
        );
    }
}
