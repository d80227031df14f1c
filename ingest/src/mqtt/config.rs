//! Settings of the MQTT bridge.

use std::time::Duration;

/// Client id of the bridge unless configured: stable, so the broker keeps its session
/// (subscriptions and unacknowledged messages) across restarts.
pub const DEFAULT_CLIENT_ID: &str = "gridpulse-bridge";

/// Where the broker is and how the bridge connects.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttBridgeConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (the persistent session is keyed by it).
    pub client_id: String,
    /// MQTT keep-alive; the broker drops the bridge after 1.5 × this without traffic.
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted (a meter's offline buffer flushed as one message).
    pub max_packet_bytes: usize,
    /// Most messages gathered into one log append.
    pub max_batch_messages: usize,
    /// First wait before reconnecting; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl MqttBridgeConfig {
    /// Defaults for the broker at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> MqttBridgeConfig {
        MqttBridgeConfig {
            host: host.into(),
            port,
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 1 << 20,
            max_batch_messages: 2048,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    /// Checks the settings once at start.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            return Err(format!(
                "--mqtt-client-id must be 1 to 64 characters, got {}",
                self.client_id.len()
            ));
        }
        if self.keep_alive < Duration::from_secs(1) {
            return Err("MQTT keep-alive must be at least 1 second".into());
        }
        if self.max_batch_messages == 0 {
            return Err("MQTT batch size must be at least 1 message".into());
        }
        Ok(())
    }
}

/// Parses `HOST:PORT` (`[::1]:1883` for IPv6), naming what is wrong.
pub fn parse_broker_address(text: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("--mqtt: expected HOST:PORT, got `{text}`"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("--mqtt: the host is empty in `{text}`"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--mqtt: `{port}` is not a port number (1-65535)"))?;
    if port == 0 {
        return Err("--mqtt: port 0 is not a broker port".into());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(&str, u16), &str>) {
        let got = parse_broker_address(input);
        match expected {
            Ok((host, port)) => assert_eq!(got, Ok((host.to_owned(), port)), "{input}"),
            Err(fragment) => {
                let error = got.expect_err(input);
                assert!(error.contains(fragment), "{input}: {error}");
            }
        }
    }

    #[test]
    fn broker_addresses() {
        check("127.0.0.1:1883", Ok(("127.0.0.1", 1883)));
        check("broker.local:8883", Ok(("broker.local", 8883)));
        check("[::1]:1883", Ok(("::1", 1883)));
        check("broker", Err("expected HOST:PORT"));
        check(":1883", Err("host is empty"));
        check("h:99999", Err("not a port number"));
        check("h:0", Err("port 0"));
    }
}
