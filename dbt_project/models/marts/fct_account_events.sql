-- depends_on: {{ ref('stg_bronze__account_events') }}
{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_id',
        full_refresh=full_refresh_on_replay(),
    )
}}
{%- set watermark = own_watermark() %}
with

{% if watermark is none %}

account_events as (

    select * from {{ ref('int_account_events_deduplicated') }}

),

{% else %}

-- incremental: the deliveries ingested since the last build, merged into their ids' rows
{{ merge_new_deliveries(
    ref('stg_bronze__account_events'), 'event_id', 'ingested_at, kafka_partition, kafka_offset', 'delivery_count', watermark, drop=['event_date']
) }},

account_events as (select * from merged),

{% endif %}

final as (

    select

        ----------  ids
        event_id,
        user_id,
        device_id,

        ---------- strings
        event_type,
        ip,
        country,

        ---------- dates and timestamps
        event_time,
        cast(timezone('UTC', event_time) as date) as event_date,

        ---------- lineage
        schema_version,
        kafka_partition,
        kafka_offset,
        ingested_at,
        delivery_count

    from account_events

)

select * from final
-- stored in event-time order: the feature assets and gold read ranges of event_time, and DuckDB
-- skips the row groups outside a range only when their zone maps are narrow
order by event_time, event_id
