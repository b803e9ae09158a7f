//! The `redisquota` adapter: quotas counted in a Redis server, so every Mixer replica that
//! points at it shares one budget.
//!
//! Each allocation is one Lua script run (atomic on the server), with the server's clock
//! (`TIME`), so replicas need not agree on time:
//! - FIXED_WINDOW: a hash `{used, ends}`; the window restarts at the first allocation after
//!   `ends`.
//! - ROLLING_WINDOW: a hash of bucket start (ms) → amount; buckets older than the window are
//!   dropped before counting.
//!
//! A non-empty deduplication id stores the grant under its own key until the grant expires; a
//! retry (from any replica) gets the stored grant and consumes nothing.
//!
//! Redis unreachable or failing: the allocation is answered as Istio 1.4's redisquota does, with
//! status UNAVAILABLE ("redisquota: Service Unavailable") and nothing granted, so the client
//! sees the quota as not granted. Connections are made on first use, not when the handler is
//! configured, so configuration never waits on Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value as Json;
use tokio::sync::OnceCell;

use super::int_param;
use super::quota::{Algorithm, Applied, Grant, Limits};

/// google.rpc UNAVAILABLE.
const UNAVAILABLE: i32 = 14;
/// google.rpc RESOURCE_EXHAUSTED.
const RESOURCE_EXHAUSTED: i32 = 8;
/// How long one Redis connection attempt or call may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// Handler params: `redisServerUrl` (`host:port` or `redis://...`), `connectionPoolSize`
/// (default 10) and the common `quotas[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub url: String,
    pub pool_size: usize,
    pub limits: Limits,
}

impl Params {
    pub fn parse(p: &Json) -> Result<Params, String> {
        let server = p
            .get("redisServerUrl")
            .or_else(|| p.get("redis_server_url"))
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("params.redisServerUrl is missing")?;
        let url = if server.contains("://") {
            server.to_string()
        } else {
            format!("redis://{server}/")
        };
        redis::Client::open(url.as_str())
            .map_err(|e| format!("params.redisServerUrl {server:?}: {e}"))?;
        let pool = int_param(p, &["connectionPoolSize", "connection_pool_size"], 10)?;
        if pool < 0 {
            return Err(format!("params.connectionPoolSize {pool} must be >= 0"));
        }
        Ok(Params {
            url,
            pool_size: (pool as usize).clamp(1, 64),
            limits: Limits::parse(p, false)?,
        })
    }
}

/// Fixed window. KEYS: counter, dedup. ARGV: max, window ms, bucket ms, best effort (0/1),
/// amount, dedup id. Returns {granted, valid ms}.
const FIXED_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local best, amount, id = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if id ~= '' then
  local prev = redis.call('HMGET', KEYS[2], 'granted', 'until')
  if prev[1] and prev[2] and now < tonumber(prev[2]) then
    return {tonumber(prev[1]), tonumber(prev[2]) - now}
  end
end
local state = redis.call('HMGET', KEYS[1], 'used', 'ends')
local used, ends = tonumber(state[1]), tonumber(state[2])
if not used or not ends or now >= ends then
  used = 0
  ends = now + window
end
local left = max - used
if left < 0 then left = 0 end
local granted = 0
if amount <= left then granted = amount elseif best == 1 then granted = left end
used = used + granted
redis.call('HSET', KEYS[1], 'used', string.format('%.0f', used), 'ends', string.format('%.0f', ends))
redis.call('PEXPIRE', KEYS[1], ends - now + 1)
if granted <= 0 then return {0, 0} end
if id ~= '' then
  redis.call('HSET', KEYS[2], 'granted', granted, 'until', string.format('%.0f', ends))
  redis.call('PEXPIRE', KEYS[2], ends - now + 1)
end
return {granted, ends - now}
"#;

/// Rolling window, same KEYS/ARGV/result as [`FIXED_WINDOW`].
const ROLLING_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max, window, bucket = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local best, amount, id = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if id ~= '' then
  local prev = redis.call('HMGET', KEYS[2], 'granted', 'until')
  if prev[1] and prev[2] and now < tonumber(prev[2]) then
    return {tonumber(prev[1]), tonumber(prev[2]) - now}
  end
end
local used = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i]) <= now - window then
    redis.call('HDEL', KEYS[1], all[i])
  else
    used = used + tonumber(all[i + 1])
  end
end
local left = max - used
if left < 0 then left = 0 end
local granted = 0
if amount <= left then granted = amount elseif best == 1 then granted = left end
if granted <= 0 then return {0, 0} end
local start = now - (now % bucket)
redis.call('HINCRBY', KEYS[1], string.format('%.0f', start), granted)
redis.call('PEXPIRE', KEYS[1], window + bucket)
if id ~= '' then
  redis.call('HSET', KEYS[2], 'granted', granted, 'until', string.format('%.0f', now + window))
  redis.call('PEXPIRE', KEYS[2], window)
end
return {granted, window}
"#;

/// One redisquota handler: a lazily connected pool and the two scripts.
pub struct RedisQuota {
    client: redis::Client,
    pool: Vec<OnceCell<ConnectionManager>>,
    next: AtomicUsize,
    fixed: redis::Script,
    rolling: redis::Script,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuota")
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

/// Why an allocation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RedisQuotaError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis call timed out")]
    Timeout,
}

impl RedisQuota {
    pub fn new(params: &Params) -> Result<RedisQuota, String> {
        let client = redis::Client::open(params.url.as_str()).map_err(|e| e.to_string())?;
        Ok(RedisQuota {
            client,
            pool: (0..params.pool_size.max(1))
                .map(|_| OnceCell::new())
                .collect(),
            next: AtomicUsize::new(0),
            fixed: redis::Script::new(FIXED_WINDOW),
            rolling: redis::Script::new(ROLLING_WINDOW),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisQuotaError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let conn = self.pool[i]
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT)
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(conn.clone())
    }

    async fn run(
        &self,
        limit: &Applied,
        amount: i64,
        best_effort: bool,
        dedup_id: &str,
    ) -> Result<(i64, i64), RedisQuotaError> {
        let mut conn = tokio::time::timeout(REDIS_TIMEOUT, self.connection())
            .await
            .map_err(|_| RedisQuotaError::Timeout)??;
        let script = match limit.algorithm {
            Algorithm::FixedWindow => &self.fixed,
            Algorithm::RollingWindow => &self.rolling,
        };
        let mut inv = script.prepare_invoke();
        inv.key(format!("mixer-quota|{}", limit.key))
            .key(format!("mixer-quota-dedup|{dedup_id}|{}", limit.key))
            .arg(limit.max_amount)
            .arg(limit.valid_duration.as_millis().max(1) as i64)
            .arg(limit.bucket_duration.as_millis().max(1) as i64)
            .arg(i64::from(best_effort))
            .arg(amount)
            .arg(dedup_id);
        let fut = inv.invoke_async::<(i64, i64)>(&mut conn);
        tokio::time::timeout(REDIS_TIMEOUT, fut)
            .await
            .map_err(|_| RedisQuotaError::Timeout)?
            .map_err(RedisQuotaError::from)
    }

    /// Allocates `amount` against `limit`; Redis failing answers UNAVAILABLE, nothing granted.
    pub async fn alloc(
        &self,
        limit: &Applied,
        amount: i64,
        best_effort: bool,
        dedup_id: &str,
    ) -> Grant {
        match self.run(limit, amount, best_effort, dedup_id).await {
            Ok((granted, _)) if granted <= 0 => {
                tracing::debug!(key = %limit.key, requested = amount, "redisquota exhausted");
                Grant {
                    amount: 0,
                    valid_duration: Duration::ZERO,
                    code: RESOURCE_EXHAUSTED,
                    message: "redisquota: Resource exhausted".into(),
                }
            }
            Ok((granted, valid_ms)) => {
                tracing::debug!(key = %limit.key, requested = amount, granted, "redisquota");
                Grant::ok(
                    granted,
                    Duration::from_millis(u64::try_from(valid_ms).unwrap_or(0)),
                )
            }
            Err(e) => {
                tracing::warn!(key = %limit.key, error = %e, "redisquota allocation failed; nothing granted");
                Grant {
                    amount: 0,
                    valid_duration: Duration::ZERO,
                    code: UNAVAILABLE,
                    message: "redisquota: Service Unavailable".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params() {
        let p = Params::parse(&json!({
            "redisServerUrl": "redis-release-master:6379",
            "connectionPoolSize": 10,
            "quotas": [{"name": "q.instance.istio-system", "maxAmount": 1, "validDuration": "30s",
                        "rateLimitAlgorithm": "FIXED_WINDOW"}]
        }))
        .unwrap();
        assert_eq!(p.url, "redis://redis-release-master:6379/");
        assert_eq!(p.pool_size, 10);
        assert_eq!(p.limits.quotas[0].algorithm, Algorithm::FixedWindow);
        assert!(Params::parse(&json!({"quotas": []})).is_err());
        assert!(
            Params::parse(&json!({"redisServerUrl": "h:1", "connectionPoolSize": -1})).is_err()
        );
    }

    #[tokio::test]
    async fn unreachable_redis_grants_nothing_with_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let p = Params::parse(&json!({"redisServerUrl": "127.0.0.1:1", "quotas": []})).unwrap();
        let q = RedisQuota::new(&p).unwrap();
        let limit = Applied {
            key: "k".into(),
            max_amount: 10,
            valid_duration: Duration::from_secs(1),
            bucket_duration: Duration::ZERO,
            algorithm: Algorithm::FixedWindow,
        };
        let g = q.alloc(&limit, 1, false, "").await;
        assert_eq!(g.amount, 0);
        assert_eq!(g.code, UNAVAILABLE);
        assert_eq!(g.message, "redisquota: Service Unavailable");
    }
}
