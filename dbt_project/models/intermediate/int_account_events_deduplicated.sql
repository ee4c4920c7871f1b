with

account_events as (

    select * from {{ ref('stg_bronze__account_events') }}

),

deduplicated as (

    -- keep the first copy ingested: ingestion order is (ingested_at, partition, offset)
    select
        *,
        count(*) over (partition by event_id) as delivery_count

    from account_events

    qualify row_number() over (
        partition by event_id
        order by ingested_at, kafka_partition, kafka_offset
    ) = 1

)

select * from deduplicated
