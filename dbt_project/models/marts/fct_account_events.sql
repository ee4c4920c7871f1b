with

account_events as (

    select * from {{ ref('int_account_events_deduplicated') }}

),

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
