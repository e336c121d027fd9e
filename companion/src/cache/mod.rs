//! Tenant cache invalidation in Redis (to be written)
