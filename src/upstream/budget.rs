//! Upstream budgets: an upstream's own team-wide limits (xAI: batch creations per second,
//! add-requests calls per 30 s), kept cluster-wide, with waiting calls served fairly.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout_at};

use crate::error::{Error, Result};
use crate::keys::{ResourceKey, kind};
use crate::ratelimit::{Class, Limit, MemoryLimiter, RateLimiter, RedisLimiter};
use crate::shared_redis::SharedRedis;

/// Which budget a call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spend {
    /// Creating a batch or job.
    Create,
    /// One add-requests call.
    Add,
}

impl Spend {
    /// The budget's name in metrics and logs: `create` or `add`.
    pub fn as_str(self) -> &'static str {
        match self {
            Spend::Create => "create",
            Spend::Add => "add",
        }
    }
}

/// The budgets of one upstream, and the pause a 429 puts on all of them.
#[derive(Clone, Default)]
pub struct Budgets {
    budgets: HashMap<Spend, Arc<Budget>>,
    pause: Arc<Pause>,
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("spends", &self.budgets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Budgets {
    /// The budgets of `provider`: each `(spend, limit)` is kept in `limiter` (Redis for
    /// the whole cluster, else this replica's memory); a 429 pause is shared via `redis`.
    pub fn new(
        provider: &'static str,
        limits: &[(Spend, Limit)],
        limiter: Arc<dyn RateLimiter>,
        redis: Option<SharedRedis>,
    ) -> Self {
        let pause = Arc::new(Pause {
            until: Mutex::new(None),
            redis,
            key: ResourceKey::new(format!("upstream-{provider}"), provider, kind::PAUSE, "429")
                .to_string(),
        });
        let budgets = limits
            .iter()
            .map(|&(spend, limit)| {
                let budget = Budget {
                    bucket: format!("upstream-{provider}-{}", spend.as_str()),
                    subject: format!("upstream:{provider}/{}", spend.as_str()),
                    limit,
                    limiter: limiter.clone(),
                    pause: pause.clone(),
                    queue: Mutex::new(Queue::default()),
                };
                (spend, Arc::new(budget))
            })
            .collect();
        Self { budgets, pause }
    }

    /// The budgets `config` sets for `provider`, on Redis when there is one.
    pub fn from_config(
        provider: &'static str,
        config: &crate::config::Config,
        redis: Option<&SharedRedis>,
    ) -> Self {
        let b = &config.budgets;
        let rates = match provider {
            "xai" => vec![
                (Spend::Create, b.xai_creates_per_second),
                (Spend::Add, b.xai_adds_per_second),
            ],
            _ => vec![(Spend::Create, b.sutro_creates_per_second)],
        };
        // One call per interval, no burst: no window of the upstream's is ever overrun.
        let limits: Vec<(Spend, Limit)> = rates
            .into_iter()
            .filter_map(|(spend, rate)| {
                Some((
                    spend,
                    Limit {
                        per_second: rate?,
                        burst: 1,
                    },
                ))
            })
            .collect();
        if limits.is_empty() {
            return Self::default();
        }
        let idle = limits
            .iter()
            .map(|(_, limit)| limit.interval())
            .max()
            .unwrap_or_default();
        let limiter: Arc<dyn RateLimiter> = match redis {
            Some(redis) => Arc::new(RedisLimiter::new(
                redis.clone(),
                config.rate_limits.redis_down,
                config.rate_limits.replicas,
                idle,
            )),
            None => Arc::new(MemoryLimiter::new(idle)),
        };
        Self::new(provider, &limits, limiter, redis.cloned())
    }

    /// Whether `spend` is kept at all (a budget of 0 is off: nothing to wait for).
    pub fn keeps(&self, spend: Spend) -> bool {
        self.budgets.contains_key(&spend)
    }

    /// Waits, fairly and within `deadline`, for a slot of `spend` for `tenant`; at once
    /// when that spend has no budget. RESOURCE_EXHAUSTED when no slot comes in time.
    pub async fn spend(&self, spend: Spend, tenant: &str, deadline: Instant) -> Result<()> {
        match self.budgets.get(&spend) {
            Some(budget) => {
                let taken = budget.clone().acquire(tenant, deadline).await;
                // An event on the RPC's span: the upstream budget let the call go, or not.
                tracing::debug!(budget = ?spend, admitted = taken.is_ok(), "upstream budget");
                taken
            }
            None => Ok(()),
        }
    }

    /// The upstream answered 429: every budgeted call of this upstream, on every
    /// replica, waits `retry_after` before the next one goes.
    pub async fn pause_for(&self, retry_after: Duration) {
        if self.budgets.is_empty() {
            return;
        }
        self.pause.extend(retry_after).await;
    }
}

/// A pause on an upstream's budgets after its 429, kept locally and in Redis.
#[derive(Default)]
struct Pause {
    until: Mutex<Option<Instant>>,
    redis: Option<SharedRedis>,
    key: String,
}

impl Pause {
    async fn extend(&self, length: Duration) {
        let until = Instant::now() + length;
        {
            let mut current = lock(&self.until);
            *current = Some(current.map_or(until, |c| c.max(until)));
        }
        if let Some(redis) = &self.redis {
            let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1);
            // Redis away: the other replicas learn of the 429 from their own calls.
            let _ = redis
                .query::<()>(redis::cmd("SET").arg(&self.key).arg(1).arg("PX").arg(ms))
                .await;
        }
    }

    /// How long the budgets are still paused, here or by another replica's 429.
    async fn left(&self) -> Option<Duration> {
        let now = Instant::now();
        let local = lock(&self.until)
            .filter(|until| *until > now)
            .map(|until| until - now);
        let shared = match &self.redis {
            Some(redis) => redis
                .query::<i64>(redis::cmd("PTTL").arg(&self.key))
                .await
                .ok()
                .and_then(|ms| u64::try_from(ms).ok())
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            None => None,
        };
        local.max(shared)
    }
}

/// One budget: a GCRA bucket shared by the cluster, and this replica's waiting calls.
struct Budget {
    bucket: String,
    subject: String,
    limit: Limit,
    limiter: Arc<dyn RateLimiter>,
    pause: Arc<Pause>,
    queue: Mutex<Queue>,
}

/// Waiting calls: FIFO per tenant, tenants served round-robin, so one busy tenant never
/// holds the others back.
#[derive(Default)]
struct Queue {
    turns: VecDeque<String>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    count: usize,
    dispatching: bool,
}

impl Queue {
    fn push(&mut self, tenant: &str, slot: oneshot::Sender<()>) {
        let queue = self.waiting.entry(tenant.to_owned()).or_default();
        if queue.is_empty() {
            self.turns.push_back(tenant.to_owned());
        }
        queue.push_back(slot);
        self.count += 1;
    }

    /// The next waiting call in turn, skipping calls that gave up.
    fn next(&mut self) -> Option<oneshot::Sender<()>> {
        while let Some(tenant) = self.turns.pop_front() {
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            while let Some(slot) = queue.pop_front() {
                self.count -= 1;
                if slot.is_closed() {
                    continue;
                }
                if queue.is_empty() {
                    self.waiting.remove(&tenant);
                } else {
                    self.turns.push_back(tenant);
                }
                return Some(slot);
            }
            self.waiting.remove(&tenant);
        }
        None
    }
}

impl Budget {
    async fn acquire(self: Arc<Self>, tenant: &str, deadline: Instant) -> Result<()> {
        let (slot, granted) = oneshot::channel();
        let ahead = {
            let mut queue = lock(&self.queue);
            let ahead = queue.count;
            queue.push(tenant, slot);
            if !queue.dispatching {
                queue.dispatching = true;
                tokio::spawn(self.clone().dispatch());
            }
            ahead
        };
        // A call that cannot get a slot before its deadline hears so now, not then.
        let wait = self
            .limit
            .interval()
            .saturating_mul(u32::try_from(ahead).unwrap_or(u32::MAX));
        if Instant::now() + wait > deadline {
            return Err(self.exhausted(wait));
        }
        match timeout_at(deadline, granted).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Internal("an upstream budget stopped".into())),
            Err(_) => Err(self.exhausted(self.limit.interval())),
        }
    }

    fn exhausted(&self, retry_after: Duration) -> Error {
        Error::RateLimited {
            subject: self.subject.clone(),
            description: format!(
                "the upstream's own limit of {} calls per second is in use by other calls; retry later",
                self.limit.per_second
            ),
            retry_after: Some(retry_after),
        }
    }

    /// Hands out slots as the cluster-wide bucket allows, while anyone waits here.
    async fn dispatch(self: Arc<Self>) {
        loop {
            if let Some(left) = self.pause.left().await {
                sleep(left).await;
                continue;
            }
            if lock(&self.queue).count == 0 {
                let mut queue = lock(&self.queue);
                // Checked again under the lock `acquire` pushes under.
                if queue.count == 0 {
                    queue.dispatching = false;
                    return;
                }
            }
            let decision = self
                .limiter
                .check(&self.bucket, Class::Create, self.limit)
                .await;
            if !decision.admitted {
                sleep(decision.retry_after.max(Duration::from_millis(1))).await;
                continue;
            }
            // The slot goes to the next call still waiting; one that left passes it on.
            loop {
                let Some(slot) = lock(&self.queue).next() else {
                    break;
                };
                if slot.send(()).is_ok() {
                    break;
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(per_second: f64) -> Budgets {
        let limiter: Arc<dyn RateLimiter> = Arc::new(MemoryLimiter::new(Duration::from_secs(60)));
        Budgets::new(
            "xai",
            &[(
                Spend::Create,
                Limit {
                    per_second,
                    burst: 1,
                },
            )],
            limiter,
            None,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_calls_are_served_round_robin_across_tenants() {
        let budgets = budgets(10.0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        // Tenant a queues five calls before b and c queue one each.
        for tenant in ["a", "a", "a", "a", "a", "b", "c"] {
            let (budgets, order) = (budgets.clone(), order.clone());
            calls.push(tokio::spawn(async move {
                budgets
                    .spend(Spend::Create, tenant, deadline)
                    .await
                    .unwrap();
                lock(&order).push(tenant);
            }));
            tokio::task::yield_now().await;
        }
        for call in calls {
            call.await.unwrap();
        }
        let order = lock(&order).clone();
        let b = order.iter().position(|t| *t == "b").unwrap();
        let c = order.iter().position(|t| *t == "c").unwrap();
        assert!(
            b <= 2 && c <= 3,
            "b and c wait behind one or two of a's calls: {order:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_follow_the_rate_and_a_429_pauses_them() {
        let budgets = budgets(2.0);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        for _ in 0..3 {
            budgets.spend(Spend::Create, "a", deadline).await.unwrap();
        }
        // One at once, then one every 500 ms.
        assert!(started.elapsed() >= Duration::from_millis(1_000));
        assert!(started.elapsed() < Duration::from_millis(1_100));
        budgets.pause_for(Duration::from_secs(5)).await;
        let paused = Instant::now();
        budgets.spend(Spend::Create, "b", deadline).await.unwrap();
        assert!(paused.elapsed() >= Duration::from_secs(5));
        // Spends without a budget never wait.
        budgets.spend(Spend::Add, "a", deadline).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cannot_get_a_slot_in_time_is_refused_at_once() {
        let budgets = budgets(1.0);
        let soon = Instant::now() + Duration::from_millis(1_500);
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let budgets = budgets.clone();
            waiting.push(tokio::spawn(async move {
                budgets
                    .spend(Spend::Create, "a", Instant::now() + Duration::from_secs(60))
                    .await
            }));
            tokio::task::yield_now().await;
        }
        let refused = budgets.spend(Spend::Create, "b", soon).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        for call in waiting {
            call.await.unwrap().unwrap();
        }
    }
}
