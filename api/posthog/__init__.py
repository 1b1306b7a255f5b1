"""PostHog's tracing and metrics APIs (seeds 000 and 002), under /api/projects/:project_id/ and
/api/environments/:project_id/. Shared by both: the error shape and the URL prefixes (`common`)."""
