//! The configured limits: rate and burst per method class, per-tenant overrides, the
//! stream cap, and what to do while Redis is away; read from TOML, resolved once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::class::Class;

/// One class's limit as written in TOML: `{ per_second = 50, burst = 10 }`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSetting {
    /// Sustained calls per second (may be fractional: 0.5 is one call every 2 s).
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell [default: per_second rounded up].
    pub burst: Option<u32>,
}

/// Limits by class, as a TOML table: `[rate_limits.read]`, `[rate_limits.create]`, ...
pub type ClassSettings = BTreeMap<Class, LimitSetting>;

/// A resolved GCRA limit: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls allowed at once when the bucket is full (at least 1).
    pub burst: u32,
}

impl Limit {
    /// The time one call costs (GCRA's emission interval).
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }

    /// This replica's share when `replicas` replicas limit on their own (Redis away):
    /// the rate and the burst divided, never below one call at once.
    pub fn share(&self, replicas: u32) -> Limit {
        let n = f64::from(replicas.max(1));
        Limit {
            per_second: self.per_second / n,
            burst: self.burst.div_ceil(replicas.max(1)).max(1),
        }
    }

    /// `x-ratelimit-limit`: Envoy's `<limit>, <limit>;w=<window>` with a one-second
    /// window, plus the burst as a quota-policy parameter: `50, 50;w=1;burst=10`.
    pub fn header(&self) -> String {
        // f64's Display writes 50.0 as `50` and 0.5 as `0.5`.
        format!("{0}, {0};w=1;burst={1}", self.per_second, self.burst)
    }

    fn resolve(setting: &LimitSetting, at: &str) -> Result<Limit, String> {
        let per_second = setting.per_second;
        // Below one call a day or above a million a second a limit is a typo, and the
        // emission interval (1 / rate) must stay a sane, non-zero Duration.
        if !(1.0 / 86_400.0..=1e6).contains(&per_second) {
            return Err(format!(
                "{at}.per_second must be a number of calls per second from one a day to 1000000"
            ));
        }
        let burst = match setting.burst {
            Some(0) => return Err(format!("{at}.burst must be at least 1")),
            Some(burst) => burst,
            // One second's worth: a caller at the limit never waits on its own jitter.
            None => per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        };
        Ok(Limit { per_second, burst })
    }
}

/// What the Redis limiter does while Redis is unreachable.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RedisDown {
    /// Admit every call: no limits until Redis is back.
    Open,
    /// Limit in this replica alone, at its share (rate / `rate_limit_replicas`).
    #[default]
    Local,
}

/// Every caller limit the gateway runs with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Limits by class for every tenant (`None`: unlimited).
    default: [Option<Limit>; 4],
    /// Per-tenant limits, class by class over `default`.
    tenants: BTreeMap<String, [Option<Limit>; 4]>,
    /// Most streams (Watch*, results streams) one tenant may hold open on this replica.
    pub max_streams_per_tenant: Option<u32>,
    /// What to do while Redis is away.
    pub redis_down: RedisDown,
    /// How many replicas share the limits (for the local fallback's share).
    pub replicas: u32,
}

impl RateLimits {
    /// Resolves the TOML tables and settings, refusing limits that cannot work.
    pub fn resolve(
        defaults: Option<&ClassSettings>,
        tenants: Option<&BTreeMap<String, ClassSettings>>,
        max_streams_per_tenant: Option<u32>,
        redis_down: RedisDown,
        replicas: u32,
    ) -> Result<RateLimits, String> {
        let table = |settings: Option<&ClassSettings>, at: &str| {
            let mut limits = [None; 4];
            for (class, setting) in settings.into_iter().flatten() {
                limits[class.index()] = Some(Limit::resolve(setting, &format!("{at}.{class}"))?);
            }
            Ok::<_, String>(limits)
        };
        let default = table(defaults, "rate_limits")?;
        let tenants = tenants
            .into_iter()
            .flatten()
            .map(|(tenant, settings)| {
                let at = format!("tenant_limits.\"{tenant}\"");
                Ok((tenant.clone(), table(Some(settings), &at)?))
            })
            .collect::<Result<_, String>>()?;
        if replicas == 0 {
            return Err("rate_limit_replicas must be at least 1".into());
        }
        if max_streams_per_tenant == Some(0) {
            return Err("max_streams_per_tenant must be at least 1 (unset: no cap)".into());
        }
        Ok(RateLimits {
            default,
            tenants,
            max_streams_per_tenant,
            redis_down,
            replicas,
        })
    }

    /// The limit of `class` for `tenant`: its own if configured, else everyone's.
    pub fn limit(&self, tenant: &str, class: Class) -> Option<Limit> {
        self.tenants
            .get(tenant)
            .and_then(|own| own[class.index()])
            .or(self.default[class.index()])
    }

    /// Whether any rate limit is configured at all.
    pub fn any_rate(&self) -> bool {
        self.default.iter().any(Option::is_some)
            || self.tenants.values().flatten().any(Option::is_some)
    }

    /// Whether calls need to be looked at at all (off: the layer passes them straight on).
    pub fn enabled(&self) -> bool {
        self.any_rate() || self.max_streams_per_tenant.is_some()
    }

    /// The longest any configured bucket takes to refill from empty: how long an idle
    /// bucket must be kept before forgetting it is the same as a full one.
    pub fn longest_refill(&self) -> Duration {
        std::iter::once(&self.default)
            .chain(self.tenants.values())
            .flatten()
            .flatten()
            .map(|l| l.interval() * l.burst)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> (ClassSettings, BTreeMap<String, ClassSettings>) {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            rate_limits: ClassSettings,
            #[serde(default)]
            tenant_limits: BTreeMap<String, ClassSettings>,
        }
        let file: File = toml::from_str(toml).expect("valid TOML");
        (file.rate_limits, file.tenant_limits)
    }

    #[test]
    fn tenant_overrides_win_class_by_class_and_unset_is_unlimited() {
        let (defaults, tenants) = parse(
            "[rate_limits.read]\nper_second = 50\nburst = 10\n\
             [tenant_limits.\"key-abc\".read]\nper_second = 5\n\
             [tenant_limits.\"key-abc\".create]\nper_second = 0.5\nburst = 2\n",
        );
        let limits =
            RateLimits::resolve(Some(&defaults), Some(&tenants), None, RedisDown::Local, 1)
                .unwrap();
        let read = Limit {
            per_second: 50.0,
            burst: 10,
        };
        assert_eq!(limits.limit("someone", Class::Read), Some(read));
        assert_eq!(limits.limit("someone", Class::Create), None);
        assert_eq!(limits.limit("someone", Class::Watch), None);
        let own = limits.limit("key-abc", Class::Read).unwrap();
        assert_eq!(
            (own.per_second, own.burst),
            (5.0, 5),
            "burst defaults to 1 s worth"
        );
        assert_eq!(limits.limit("key-abc", Class::Create).unwrap().burst, 2);
        assert!(limits.enabled());
        assert_eq!(limits.redis_down, RedisDown::Local);
        // 2 calls at 0.5/s take 4 s to come back.
        assert_eq!(limits.longest_refill(), Duration::from_secs(4));
        assert!(!RateLimits::default().enabled());
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        for bad in [
            "[rate_limits.read]\nper_second = 0\n",
            "[rate_limits.read]\nper_second = -3\n",
            "[rate_limits.read]\nper_second = 1e9\n",
            "[rate_limits.read]\nper_second = nan\n",
            "[rate_limits.read]\nper_second = 5\nburst = 0\n",
        ] {
            let (defaults, _) = parse(bad);
            assert!(
                RateLimits::resolve(Some(&defaults), None, None, RedisDown::Local, 1).is_err(),
                "{bad}"
            );
        }
        assert!(toml::from_str::<ClassSettings>("[reads]\nper_second = 1\n").is_err());
        assert!(toml::from_str::<ClassSettings>("[read]\nper_second = 1\nrate = 2\n").is_err());
        assert!(RateLimits::resolve(None, None, None, RedisDown::Local, 0).is_err());
        assert!(RateLimits::resolve(None, None, Some(0), RedisDown::Local, 1).is_err());
    }

    #[test]
    fn headers_and_shares() {
        let limit = Limit {
            per_second: 50.0,
            burst: 10,
        };
        assert_eq!(limit.header(), "50, 50;w=1;burst=10");
        let half = Limit {
            per_second: 0.5,
            burst: 1,
        };
        assert_eq!(half.header(), "0.5, 0.5;w=1;burst=1");
        let share = limit.share(3);
        assert!((share.per_second - 50.0 / 3.0).abs() < 1e-9);
        assert_eq!(share.burst, 4);
        assert_eq!(half.share(4).burst, 1);
        assert_eq!(limit.interval(), Duration::from_millis(20));
    }
}
