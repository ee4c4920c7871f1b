with

transactions as (

    select * from {{ ref('int_transactions_deduplicated') }}

),

final as (

    select

        ----------  ids
        transaction_id,
        user_id,
        card_id,
        merchant_id,
        counterparty_id,
        device_id,

        ---------- strings
        merchant_category,
        currency,
        channel,
        ip,
        country,

        ---------- numerics
        amount,

        ---------- dates and timestamps
        event_time,
        cast(timezone('UTC', event_time) as date) as event_date,

        ---------- lineage
        schema_version,
        kafka_partition,
        kafka_offset,
        ingested_at,
        delivery_count

    from transactions

)

select * from final
