//! The Bookinfo call graph: productpage calls details and reviews; reviews v2 and v3 call ratings.

/// The port every demo service listens on as seen through the mesh (its Service port).
pub const DEMO_PORT: u16 = 9080;

/// The four demo services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

impl Service {
    /// Every service, in the order productpage, details, reviews, ratings.
    pub const ALL: [Service; 4] = [
        Service::Productpage,
        Service::Details,
        Service::Reviews,
        Service::Ratings,
    ];

    /// The service's name (its Service and `app` label).
    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
        }
    }

    /// The services this one calls, in call order, for the given version.
    pub fn callees(self, version: &str) -> &'static [Service] {
        match (self, version) {
            (Service::Productpage, _) => &[Service::Details, Service::Reviews],
            (Service::Reviews, "v1") => &[],
            (Service::Reviews, _) => &[Service::Ratings],
            (Service::Details | Service::Ratings, _) => &[],
        }
    }

    /// The versions `meshctl up --demo` runs of this service.
    pub fn demo_versions(self) -> &'static [&'static str] {
        match self {
            Service::Reviews => &["v1", "v2", "v3"],
            _ => &["v1"],
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_graph_is_bookinfo() {
        assert_eq!(
            Service::Productpage.callees("v1"),
            &[Service::Details, Service::Reviews]
        );
        assert!(Service::Reviews.callees("v1").is_empty());
        assert_eq!(Service::Reviews.callees("v2"), &[Service::Ratings]);
        assert_eq!(Service::Reviews.callees("v3"), &[Service::Ratings]);
        assert!(Service::Details.callees("v1").is_empty());
        assert!(Service::Ratings.callees("v1").is_empty());
        assert_eq!(Service::Reviews.demo_versions(), &["v1", "v2", "v3"]);
    }
}
